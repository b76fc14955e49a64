"""Running `reg` as a user does: a real subprocess, against a given registry, and git."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from registry.settings import Settings
from tests.support.paths import REPO


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=test@example.com", "-c", "user.name=test", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    ).stdout.strip()


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a `reg` subprocess against ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REG_")}
    env.update({"REG_HOME": str(settings.home), "REG_DATABASE_URL": settings.database_url,
                "REG_ARTIFACT_STORE": settings.artifact_store, "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def reg_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "reg_cli.main", *args]


def run_reg(settings: Settings, *args: str, cwd: Path | None = None, timeout: float = 600,
            **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(reg_cmd(*args), cwd=cwd or REPO, env=cli_env(settings, **env),
                          capture_output=True, text=True, timeout=timeout, check=False)



def _as_tester(settings: Settings, args: tuple[str, ...],
               env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(reg_cmd(*args), cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False,
                          env=cli_env(settings, **{"REG_ACTOR": "tester", "COLUMNS": "200",
                                                   **env}))


def reg_ok(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`reg ARGS` as a user named ``tester`` runs it in a wide terminal; it must succeed."""
    p = _as_tester(settings, args, env)
    assert p.returncode == 0, f"reg {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"
    return p


def reg_fails(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`reg ARGS`, which must fail (its exit code and stderr are the test's to check)."""
    p = _as_tester(settings, args, env)
    assert p.returncode != 0, f"reg {' '.join(args)} succeeded:\n{p.stdout}"
    return p
