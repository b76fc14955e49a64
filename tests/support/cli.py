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
