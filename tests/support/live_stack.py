"""The live serving tests' registry: support-bot v1 ("alpha") and v2 ("bravo") and their
baseline, shared by tests/serving/conftest.py's fixtures and the tests that use them."""

from __future__ import annotations

from pathlib import Path

from registry.api import Registry
from registry.settings import Settings
from tests.support.adapters import MODEL

KEYWORDS = {1: "alpha", 2: "bravo"}
ADMIN_TOKEN = "test-admin-token"
# v2's recipe asks for a longer context than v1's (the example's 512): the one engine
# both share must run with the larger.
MAX_MODEL_LEN = {1: 512, 2: 1024}

__all__ = ["ADMIN_TOKEN", "KEYWORDS", "MAX_MODEL_LEN", "MODEL", "open_registry", "set_baseline"]


def open_registry(home: Path) -> Registry:
    return Registry(Settings.for_home(home))


def set_baseline(reg: Registry) -> None:
    """v1 in production, v2 in canary, 80/20, nothing in staging."""
    reg.promote(MODEL, 1, "production", reason="test baseline")
    reg.promote(MODEL, 2, "canary", reason="test baseline")
    stages = reg.stage_map(MODEL)
    if "staging" in stages:
        reg.set_traffic(MODEL, {"production": 80, "canary": 20}, None, reason="baseline")
        reg.clear_stage(MODEL, "staging", reason="test baseline")
    reg.set_traffic(MODEL, {"production": 80, "canary": 20}, None, reason="test baseline")
