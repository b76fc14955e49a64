"""Prometheus's own linter over a /metrics page (`promtool check metrics`)."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def assert_promtool_clean(text: str) -> None:
    """Fail unless promtool accepts ``text`` without a warning."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: run `bash scripts/install_services.sh` (as root)")
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), (
        out.stdout + out.stderr)
