"""Does the engine serve the candidate's weights? The rollout's identity check, against vLLM.

Runtime LoRA loading can serve the wrong weights, so before a version receives any
traffic (and again after every engine restart) the canary controller calls
:meth:`EngineIdentityCheck.verify`:

1. find the version's deployment in what the gateway routes by (so its adapter has
   been loaded) and its engine's status; not there yet, not ready, or the adapter not
   loaded: raise :class:`IdentityUnavailable` (the controller records it and asks again
   next pass, it does not roll back);
2. answer from the cache when this version was checked on this engine generation
   already (a restart, or a new external engine process, bumps the generation);
3. read the artifact's ``probes.json`` (fetched, digest-verified, into the adapter
   store as the adapter itself); an artifact from before probes existed passes;
4. ask the engine each probe pinned to the adapter ``M@vN`` (not through traffic
   routing, and not counted as user traffic), greedy, ``max_tokens`` as recorded, and
   compare (:func:`recipes.evaluation.probes.compare`, pure).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
import httpx

from recipes.core.errors import RegError
from recipes.evaluation.probes import ProbeSet, compare, read_probes
from registry.deployments import Deployment
from serving.engines.process import engine_key
from serving.engines.state import EngineStatus

NO_PROBES = "no probes recorded (the artifact was trained before probes existed)"


async def probe_adapter(session: aiohttp.ClientSession, url: str, name: str,
                        artifact: Path, timeout_s: float = 60.0) -> tuple[bool, str]:
    """Ask the engine at ``url`` the probes recorded in ``artifact`` (pinned to the loaded
    adapter ``name``, greedy) and compare: (matched, a sentence saying so). An engine that
    cannot answer is a failure too: an adapter is not served before its probes match.
    The supervisor runs it on adapters it re-loads into a restarted engine."""
    probes = read_probes(artifact)
    if probes is None:
        return True, NO_PROBES
    answers: list[str] = []
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    for i, p in enumerate(probes.probes):
        body = {"model": name, "messages": p.messages, "temperature": 0,
                "max_tokens": probes.max_tokens}
        try:
            async with session.post(url.rstrip("/") + "/v1/chat/completions", json=body,
                                    timeout=timeout) as r:
                if r.status != 200:
                    text = (await r.text())[:300]
                    return False, f"probe {i + 1} got HTTP {r.status}: {text}"
                data = await r.json(content_type=None)
            answers.append(str(data["choices"][0]["message"]["content"] or ""))
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError,
                TypeError) as e:
            return False, f"probe {i + 1} got no chat completion: {type(e).__name__}: {e}"
    return compare(probes, answers)


class IdentityUnavailable(RegError):
    """The engine cannot be asked yet: not running, not ready, or the adapter not loaded."""


class EngineView(Protocol):
    """What the check reads of the gateway: thread-safe snapshots, replaced whole."""

    def deployment(self, model: str, version: int) -> Deployment | None:
        """The version as routing knows it (its adapter loaded), or None."""
        ...

    def engines(self) -> Mapping[str, EngineStatus]:
        """Every engine replica's status, by replica key (the base model path for the
        first replica)."""
        ...


class ArtifactFetcher(Protocol):
    """:class:`serving.source.DeploymentSource`'s part the check needs (may block)."""

    def fetch_artifact(self, deployment: Deployment, dest_root: Path) -> Path: ...


@dataclass(frozen=True)
class _Checked:
    engine: str
    generation: int
    matched: bool
    detail: str


class EngineIdentityCheck:
    """:class:`rollout.canary.controller.IdentityCheck` over the engines serving runs."""

    def __init__(self, view: EngineView, artifacts: ArtifactFetcher, adapter_root: Path, *,
                 timeout_s: float = 60.0, client: httpx.Client | None = None) -> None:
        self.view = view
        self.artifacts = artifacts
        self.adapter_root = adapter_root
        self._client = client or httpx.Client(timeout=timeout_s)
        self._cache: dict[tuple[str, int, str], _Checked] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def verify(self, model: str, version: int) -> tuple[bool, str]:
        """Whether every ready replica holding the version's adapter serves its weights
        (each replica checked once per engine generation); at least one must hold it."""
        d = self.view.deployment(model, version)
        if d is None:
            raise IdentityUnavailable(
                f"{model} v{version} is not loaded in an engine yet",
                hint="the gateway loads a version once a stage points at it; see "
                "`GET /admin/status`")
        key = engine_key(d)
        replicas = [s for s in self.view.engines().values() if s.base == key]
        ready = [s for s in replicas if s.ready]
        if not ready:
            first = next((s for s in replicas if s.key == key), None)
            why = "no engine runs" if first is None else (first.reason or first.state.value)
            raise IdentityUnavailable(f"cannot check {d.adapter_name}: {why} ({key})")
        holders = sorted((s for s in ready if d.adapter_name in s.adapters),
                         key=lambda s: s.key)
        if not holders:
            raise IdentityUnavailable(
                f"{d.adapter_name} is not loaded in the engine for {key} yet")
        results = [self._replica(model, version, d, s) for s in holders]
        failed = [detail for matched, detail in results if not matched]
        if failed:
            return False, failed[0]
        return True, results[0][1]

    def _replica(self, model: str, version: int, d: Deployment, status: EngineStatus
                 ) -> tuple[bool, str]:
        with self._lock:
            hit = self._cache.get((model, version, status.key))
        if hit is not None and hit.generation == status.generation:
            return hit.matched, hit.detail
        matched, detail = self._check(d, status)
        if status.replica:
            detail += f" on replica {status.replica}"
        with self._lock:
            self._cache[(model, version, status.key)] = _Checked(
                status.key, status.generation, matched, detail)
        return matched, detail

    def _check(self, d: Deployment, status: EngineStatus) -> tuple[bool, str]:
        probes = read_probes(self.artifacts.fetch_artifact(d, self.adapter_root))
        if probes is None:
            return True, NO_PROBES
        answers = [self._ask(d, status, probes, i) for i in range(len(probes.probes))]
        matched, detail = compare(probes, answers)
        return matched, f"{detail} (engine generation {status.generation})"

    def _ask(self, d: Deployment, status: EngineStatus, probes: ProbeSet, i: int) -> str:
        body = {"model": d.adapter_name, "messages": probes.probes[i].messages,
                "temperature": 0, "max_tokens": probes.max_tokens}
        url = status.url.rstrip("/") + "/v1/chat/completions"
        try:
            r = self._client.post(url, json=body)
        except httpx.HTTPError as e:
            raise IdentityUnavailable(
                f"cannot ask the engine at {status.url} for {d.adapter_name}'s probe "
                f"{i + 1}: {type(e).__name__}: {e}") from e
        if r.status_code == 404:
            raise IdentityUnavailable(
                f"the engine at {status.url} does not have {d.adapter_name} loaded (HTTP 404)")
        if r.status_code != 200:
            raise IdentityUnavailable(
                f"the engine at {status.url} answered {d.adapter_name}'s probe {i + 1} with "
                f"HTTP {r.status_code}: {r.text[:300]}")
        try:
            content = r.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise IdentityUnavailable(
                f"the engine's answer to {d.adapter_name}'s probe {i + 1} is not a chat "
                f"completion: {r.text[:300]}") from e
        return str(content or "")
