"""serving/ reads the environment in two places only: its settings (serving/config.py)
and the engine child's environment (process.engine_env). Everything else is handed
what it needs, so a library caller or a test configures it by argument, not by env."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import REPO

SERVING = REPO / "serving"
# (module, function) pairs allowed to read os.environ; None: the whole module.
ALLOWED = {("serving/config.py", None), ("serving/engines/process.py", "engine_env")}
_READS = {"environ", "getenv", "environb", "getenvb"}


def env_reads(path: Path) -> list[tuple[int, str | None]]:
    """(line, enclosing function) of every use of os.environ / os.getenv in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str | None]] = []

    def visit(node: ast.AST, func: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = func
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = func or child.name
            if (isinstance(child, ast.Attribute) and child.attr in _READS
                    and isinstance(child.value, ast.Name) and child.value.id == "os"):
                found.append((child.lineno, inner))
            if isinstance(child, ast.ImportFrom) and child.module == "os" and any(
                    a.name in _READS for a in child.names):
                found.append((child.lineno, inner))
            visit(child, inner)

    visit(tree, None)
    return found


def test_only_the_settings_and_the_engine_child_read_the_environment() -> None:
    offenders = []
    for path in sorted(SERVING.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for line, func in env_reads(path):
            if (rel, None) not in ALLOWED and (rel, func) not in ALLOWED:
                offenders.append(f"{rel}:{line} (in {func or 'module scope'})")
    assert not offenders, "read the environment in serving/config.py instead: " + ", ".join(
        offenders)


def test_the_check_sees_a_read(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    return os.environ.get('X')\n"
                      "from os import getenv\n")
    assert env_reads(module) == [(4, "f"), (5, None)]
