"""Keep an engine's loaded LoRA adapters equal to the deployed set.

Deciding is pure (:func:`plan_sync`); doing is :func:`apply_plan`, through vLLM's
runtime ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``. Names are
``MODEL@vN`` and never reused, so a name that is loaded has the right weights:
sync compares names only and never reloads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from recipes.artifact import FORBIDDEN_SUFFIXES
from recipes.core.errors import RegError


class AdapterPathError(RegError):
    """An adapter path lies outside the store the engine may load from."""


@dataclass(frozen=True)
class SyncPlan:
    load: tuple[tuple[str, Path], ...] = ()
    unload: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.load and not self.unload


@dataclass
class SyncResult:
    loaded: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def plan_sync(
    desired: Mapping[str, Path], loaded: Iterable[str], keep: Iterable[str] = ()
) -> SyncPlan:
    """Load what is desired and missing; unload what is loaded and neither desired nor kept."""
    have = set(loaded)
    keep_set = set(keep)
    return SyncPlan(
        load=tuple(sorted((n, p) for n, p in desired.items() if n not in have)),
        unload=tuple(sorted(n for n in have if n not in desired and n not in keep_set)),
    )


def ensure_inside(path: Path, root: Path) -> Path:
    """``path`` resolved, if it lies under ``root`` (after following symlinks); else refuse."""
    resolved = path.resolve()
    base = root.resolve()
    if not resolved.is_relative_to(base):
        raise AdapterPathError(
            f"adapter path {path} resolves to {resolved}, outside the artifact store {base}",
            hint="engines load adapters only from the store; register the adapter "
            "with `reg register` and promote it",
        )
    return resolved


class AdapterRefused(AdapterPathError):
    """An adapter directory holds pickle-format files (code an engine could run on load)."""


def loadable(path: Path, root: Path) -> Path:
    """``path`` resolved, if it lies under ``root`` and holds no pickle-format file; else
    refuse. Every load goes through it, the hand-made ones (admin route) included."""
    resolved = ensure_inside(path, root)
    bad = sorted(p.relative_to(resolved).as_posix() for p in resolved.rglob("*")
                 if p.suffix in FORBIDDEN_SUFFIXES and p.is_file())
    if bad:
        raise AdapterRefused(
            f"adapter {resolved} holds pickle-format files: {', '.join(bad)}; not loaded",
            hint="engines load safetensors adapters only; register the adapter with "
            "`reg register` (which refuses pickles) and promote it",
        )
    return resolved


class EngineAdmin:
    """vLLM's adapter routes, over one aiohttp session (shared with the proxy)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, timeout: float = 30.0) -> None:
        self.session = session
        self.url = url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def healthy(self, timeout: float = 2.0) -> bool:
        try:
            async with self.session.get(
                self.url + "/health", timeout=aiohttp.ClientTimeout(total=timeout)
            ) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def loaded(self) -> set[str]:
        """Adapter names the engine has loaded (entries of /v1/models with a parent)."""
        async with self.session.get(self.url + "/v1/models", timeout=self.timeout) as r:
            r.raise_for_status()
            body: dict[str, Any] = await r.json()
        return {m["id"] for m in body.get("data", []) if m.get("parent")}

    async def load(self, name: str, path: Path) -> None:
        await self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})

    async def unload(self, name: str) -> None:
        await self._post("/v1/unload_lora_adapter", {"lora_name": name})

    async def _post(self, route: str, body: dict[str, str]) -> None:
        async with self.session.post(self.url + route, json=body, timeout=self.timeout) as r:
            if r.status != 200:
                text = (await r.text())[:500]
                raise RuntimeError(f"{route} {body.get('lora_name')}: HTTP {r.status}: {text}")


async def apply_plan(admin: EngineAdmin, plan: SyncPlan, root: Path) -> SyncResult:
    """Carry out a plan; one adapter failing does not stop the others (the next pass retries)."""
    result = SyncResult()
    for name, path in plan.load:
        try:
            resolved = loadable(path, root)
            await admin.load(name, resolved)
            result.loaded.append(name)
        except (AdapterPathError, RuntimeError, aiohttp.ClientError, TimeoutError) as e:
            result.errors[name] = str(e)
    for name in plan.unload:
        try:
            await admin.unload(name)
            result.unloaded.append(name)
        except (RuntimeError, aiohttp.ClientError, TimeoutError) as e:
            result.errors[name] = str(e)
    return result
