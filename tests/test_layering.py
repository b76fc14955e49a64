"""The layering of DESIGN.md is a contract `make lint` checks (import-linter), not a wish."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

PACKAGES = ("recipes", "registry", "rollout", "serving", "reg_cli")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _copy_tree(dest: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_the_tree_keeps_its_layers() -> None:
    proc = _lint(REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(("module", "line", "message"), [
    pytest.param("registry/settings.py", "import serving.config", "registry is not allowed "
                 "to import serving", id="registry-imports-serving"),
    pytest.param("recipes/schema/__init__.py", "import rollout.policy", "recipes is not allowed to "
                 "import rollout", id="recipes-imports-rollout"),
    pytest.param("recipes/core/names.py", "import recipes.schema", "recipes.core imports "
                 "nothing else", id="core-imports-schema"),
    pytest.param("serving/gateway/admin.py", "import serving.gateway.app",
                 "serving.gateway.admin is not allowed to import serving.gateway.app",
                 id="admin-imports-the-app"),
    pytest.param("serving/engines/supervisor.py", "import serving.gateway.metrics",
                 "serving.engines is not allowed to import serving.gateway",
                 id="engines-import-the-gateway"),
])
def test_an_upward_import_fails_lint(tmp_path: Path, module: str, line: str,
                                     message: str) -> None:
    root = _copy_tree(tmp_path)
    target = root / module
    target.write_text(target.read_text() + f"\n{line}  # an upward import\n")
    proc = _lint(root)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
