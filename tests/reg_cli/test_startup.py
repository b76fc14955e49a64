"""The start-up policy: applied once where a `reg` process starts, and nowhere in library code."""

from __future__ import annotations

import ast
import subprocess
import sys

from reg_cli import startup
from tests.support.paths import REPO

PACKAGES = ("recipes", "registry", "rollout", "serving", "reg_cli")


def test_main_applies_the_policy_before_the_command_and_freezes_at_the_end() -> None:
    probe = (
        "import gc, sys\n"
        "sys.argv = ['reg', '--help']\n"
        "from reg_cli.main import main\n"
        "assert gc.get_threshold()[0] == 700 and gc.get_freeze_count() == 0  # import: no-op\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(gc.get_threshold()[0], gc.get_freeze_count() > 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.split()[-2:] == [str(startup.YOUNG_THRESHOLD), "True"]


def _gc_users(package: str) -> list[str]:
    """``file:line`` of every ``import gc`` / ``from gc import`` in ``package``."""
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if "gc" in names:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_library_code_calls_no_gc() -> None:
    """Only the process's start (reg_cli/startup.py) touches the garbage collector."""
    users = [u for p in PACKAGES for u in _gc_users(p)]
    assert users == [u for u in users if u.startswith("reg_cli/startup.py:")]
    assert users, "reg_cli/startup.py applies the policy"
