# The README's two commands: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PY := .venv/bin/python
STAMP := .venv/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
# This machine's pip config lists local indexes that lack most packages; pip warns once per
# package ("WARNING: Location ... is ignored"), hundreds of lines that hide real errors.
QUIET_PIP := 2>&1 | { grep -v '^WARNING: Location' || true; }

.PHONY: demo test lint typecheck unit services install bench bench-smoke bench-tools clean docs dashboards

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	# torch first: the CPU wheel lies on disk; any other resolution pulls a CUDA build.
	set -o pipefail; $(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 $(QUIET_PIP)
	set -o pipefail; $(PY) -m pip install -q --disable-pip-version-check -e '.[dev,cpu]' $(QUIET_PIP)
	# pip picks CUDA builds of these; they break `import peft` beside the CPU torch.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton || true
	@rm -f .venv/.installed-*
	@touch $(STAMP)

services:
	@bash scripts/install_services.sh

demo: install
	@bash scripts/demo.sh

lint: install
	.venv/bin/ruff check recipes registry serving rollout reg_cli tests bench scripts deploy
	.venv/bin/lint-imports

typecheck: install
	.venv/bin/mypy

unit: install
	.venv/bin/python -m pytest -q -x -m "not slow" tests

test: install services bench-tools lint typecheck
	REG_REQUIRE_SERVICES=1 .venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 tests

# The generated references (docs/reference/); tests/reg_cli/test_reference.py fails on drift.
docs: install
	$(PY) -m reg_cli.reference docs/reference

# The Grafana dashboard (deploy/grafana/reg-dashboard.json) and docs/metrics.md, from code;
# tests/deploy fails when either drifts.
dashboards: install
	$(PY) -m deploy.grafana.dashboard
	$(PY) -m deploy.metrics_reference

# Every benchmark under bench/, one table: bench/RESULTS.md, bench/results.json, bench/plots/.
bench: install bench-tools
	$(PY) bench/run.py

# The same code paths with small sizes, into a temporary directory (tests/bench runs it too).
bench-smoke: install bench-tools
	$(PY) bench/run.py --smoke

# wrk, nginx (Debian) and vllm-router (PyPI, into bench/.venv): what the benchmarks compare with.
bench-tools:
	@bash scripts/install_bench.sh

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache demo
