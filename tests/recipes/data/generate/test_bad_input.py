"""`reg data augment|synthesize` on bad input, as a user runs them: each error names the
file (and line) with a fix, no request is sent (the endpoint here does not exist) and
nothing is written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# Nothing listens here: a command that got past its checks would fail to connect instead.
NOWHERE = "http://127.0.0.1:9/v1"


def reg(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "reg_cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".reg" not in p.parts)


@pytest.mark.parametrize(("args", "files", "error", "hint"), [
    pytest.param(["augment", "--template", "t.txt"], {"t.txt": "Rewrite:\n{txt}\n"},
                 r"t\.txt line 2: unknown placeholder \{txt\}", "takes {text} only",
                 id="template-placeholder"),
    pytest.param(["synthesize", "--topics-file", "topics.txt"],
                 {"topics.txt": "refunds\ninvoices\nrefunds\n"},
                 "topics.txt line 3: topic 'refunds' repeats line 1", "keep each topic once",
                 id="topics-repeat"),
    pytest.param(["synthesize"], {}, "--topics or --topics-file", "--topics 'refunds",
                 id="no-topics"),
    pytest.param(["augment", "--out", "../outside.jsonl"], {},
                 "--out: path '../outside.jsonl' resolves to .*outside the workspace",
                 "inside", id="out-escapes"),
    pytest.param(["augment", "--out", "data/gen.csv"], {}, "written as JSON Lines",
                 "name a .jsonl file", id="out-not-jsonl"),
    pytest.param(["synthesize", "--topics-file", "/etc/hostname"], {},
                 "--topics-file: .*outside the workspace", "inside", id="topics-escape"),
])
def test_bad_input_names_the_problem_and_writes_nothing(
        workspace: Path, args: list[str], files: dict[str, str], error: str,
        hint: str) -> None:
    for name, text in files.items():
        (workspace / name).write_text(text)
    before = _files(workspace)
    done = reg("data", args[0], "recipes/support-bot.yaml", *args[1:], "--endpoint", NOWHERE,
               cwd=workspace)
    assert done.returncode == 1, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert re.search(error, message), message
    assert hint in message and "Traceback" not in done.stderr
    assert "127.0.0.1:9" not in message  # refused before asking
    assert _files(workspace) == before


def test_dpo_recipes_are_augmented_not_synthesized(workspace: Path) -> None:
    done = reg("data", "synthesize", "recipes/polite-dpo.yaml", "--topics", "a",
               "--endpoint", NOWHERE, cwd=workspace)
    assert done.returncode == 1
    assert "preference pairs" in done.stderr and "reg data augment" in done.stderr


def test_an_unreachable_endpoint_is_a_message(workspace: Path) -> None:
    done = reg("data", "augment", "recipes/support-bot.yaml", "--endpoint", NOWHERE,
               "--retries", "1", "--n", "1", "--limit", "1", cwd=workspace)
    assert done.returncode == 1, done.stdout
    assert "cannot reach http://127.0.0.1:9/v1" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
    assert not (workspace / "data" / "support-bot.augmented.jsonl").exists()
