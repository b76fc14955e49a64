"""serving.engines.adapters: the sync plan (pure) and the store boundary."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.engines.adapters import AdapterPathError, ensure_inside, plan_sync


def test_plan_sync_loads_missing_unloads_extra_and_keeps_kept() -> None:
    plan = plan_sync({"m@v1": Path("/s/1"), "m@v2": Path("/s/2")},
                     loaded={"m@v1", "m@v0", "manual"}, keep={"manual"})
    assert plan.load == (("m@v2", Path("/s/2")),)
    assert plan.unload == ("m@v0",)
    assert plan_sync({"m@v1": Path("/s/1")}, {"m@v1"}).empty


def test_ensure_inside(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "abc").mkdir(parents=True)
    assert ensure_inside(store / "abc", store) == (store / "abc").resolve()
    with pytest.raises(AdapterPathError, match=r"outside the artifact store"):
        ensure_inside(store / ".." / "elsewhere", store)
    (store / "link").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(AdapterPathError, match=r"outside the artifact store"):
        ensure_inside(store / "link", store)
