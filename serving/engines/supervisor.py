"""The engine manager: engines and adapters follow the registry; dead engines come back.

Each pass (:meth:`Supervisor.step`, every ``poll_interval_s``) is a straight list of
steps, each safe to repeat:

1. read the registry if its change marker moved (one cheap query otherwise);
2. plan engines: one per base model with deployed versions (or ``replicas`` of it, or
   its external engines: :mod:`~serving.engines.replicas`)
   (:func:`~serving.engines.lifecycle.plan_engines`, pure); start, restart (flags
   changed) or stop;
3. advance each engine's state (:func:`~serving.engines.lifecycle.next_state`, pure):
   starting -> ready when /health answers, ready -> down when the process exits or
   health fails, down -> starting after an exponential backoff;
4. place adapters on the replicas of a base by their traffic
   (:mod:`~serving.engines.placement`: all on each while they fit its slots);
5. sync adapters on ready engines whose deployed set or placement changed (or that
   restarted, or whose failed adapter's backoff is over); an adapter re-loaded into a
   restarted engine, or loaded as one more copy of one another replica serves, is served
   there only once its identity probes match
   (:func:`~serving.engines.identity.probe_adapter`); until then it counts as failed;
6. report the registry read, the engines' status and the degraded versions to its
   :class:`~serving.engines.state.Observer` (the gateway routes by them).

An error in a pass is reported (``Observer.error``) and the next pass retries; the same
error again is logged at debug level only. An adapter that fails to fetch or load (a
corrupt blob, an engine that refuses it) is retried after an exponential backoff
(``adapter_retry_backoff_s``), logged as a warning once per reason and at info level on
each retry; until it loads, its version is reported degraded with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import aiohttp

from registry.deployments import Deployment
from registry.traffic import TrafficPolicy
from serving.config import ServeConfig
from serving.engines.adapters import (
    EngineAdmin,
    SyncPlan,
    SyncResult,
    apply_plan,
    loadable,
    plan_sync,
)
from serving.engines.identity import probe_adapter
from serving.engines.lifecycle import (
    SyncFailure,
    backoff_delay,
    next_failure,
    next_state,
    plan_engines,
)
from serving.engines.placement import DemandMeter, placements
from serving.engines.process import (
    EngineProcess,
    EngineSpec,
    EngineState,
    detect_device,
    engine_key,
    engine_spec,
    model_len_note,
)
from serving.engines.replicas import EngineSlot, replica_index, replica_specs
from serving.engines.state import Deployed, EngineStatus, Observer
from serving.source import ChangeFeed, DeploymentSource

log = logging.getLogger("reg.serving")


class Supervisor:
    """Keeps engines and their adapters equal to what the registry deploys."""

    def __init__(
        self,
        source: DeploymentSource,
        config: ServeConfig,
        observer: Observer,
        session: aiohttp.ClientSession,
        *,
        changes: ChangeFeed | None = None,
        clock: Callable[[], float] = time.monotonic,
        demand: Callable[[], tuple[Mapping[str, int], Mapping[str, int]]] | None = None,
    ) -> None:
        self.source = source
        self.changes = changes
        self.config = config
        self.observer = observer
        self.session = session
        self.clock = clock
        self.slots: dict[str, EngineSlot] = {}
        self.marker: int | None = None
        self.deployments: list[Deployment] = []
        self.policies: dict[str, TrafficPolicy | None] = {}
        self.known: dict[str, list[int]] = {}
        self._paths: dict[str, Path] = {}
        self._notes: dict[str, tuple[str, ...]] = {}
        # Adapters that failed to fetch or load, by name, until one attempt succeeds.
        self._failing: dict[str, SyncFailure] = {}
        self._degraded: dict[tuple[str, int], str] = {}
        self._published = False
        self._lock = asyncio.Lock()
        self._dirty = True
        self._task: asyncio.Task[None] | None = None
        self._device = detect_device()
        self._replicas: dict[str, tuple[str, EngineSpec, str | None]] = {}
        # The gateway's running counts of requests and spills per adapter, and what the
        # replicas of a base should hold by them (placement.py; none: every adapter).
        self._demand = demand
        self._meter = DemandMeter(clock)
        self._placement: dict[str, frozenset[str]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reg-supervisor")

    async def _run(self) -> None:
        last = ""
        while True:
            try:
                await self.step()
                last = ""
            except asyncio.CancelledError:
                raise
            except Exception as e:  # reported; the next pass retries
                message = f"{type(e).__name__}: {e}"
                self.observer.error(message)
                if message != last:
                    log.exception("supervisor pass failed")
                else:  # the same failure every pass: said once, with its traceback
                    log.debug("supervisor pass failed again: %s", message)
                last = message
            await self._between_passes()

    async def _between_passes(self) -> None:
        """``poll_interval_s``, or less: a change feed ends the wait when a change commits,
        so a promotion is routed at once rather than at the next poll."""
        if self.changes is None:
            await asyncio.sleep(self.config.poll_interval_s)
        else:
            await asyncio.to_thread(self.changes.wait, self.config.poll_interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        async with self._lock:
            await asyncio.gather(*(self._stop_slot(s) for s in self.slots.values()))
            self.slots.clear()
            self._publish_engines()

    # -- one pass --------------------------------------------------------------------------

    async def step(self, *, force: bool = False) -> None:
        async with self._lock:
            if await self._read_registry(force=force):
                # Cleared only once published, so a pass that fails midway is redone.
                self._dirty = True
            await self._plan_and_apply()
            await self._advance_all()
            self._place()
            # Make before break: load new versions, move routing to them, and only
            # then unload what routing no longer names, so no request is routed to an
            # adapter that is already gone.
            retry = self._retry_due()
            syncing = [s for s in self.slots.values() if s.state is EngineState.ready
                       and (self._dirty or s.needs_sync or retry)]
            for slot in syncing:
                if retry or slot.needs_sync or self._missing(slot):
                    await self._sync(slot, unload=False)
            if self._dirty or not self._published:
                self._publish_degraded()  # first: routing never sees a failed one servable
                self._publish_deployed()
                self._dirty = False
            for slot in syncing:
                await self._sync(slot, unload=True)
            self._publish_engines()
            self._publish_degraded()

    async def _read_registry(self, *, force: bool) -> bool:
        marker = await asyncio.to_thread(self.source.change_marker)
        if not force and marker == self.marker:
            return False
        deployments, policies, known = await asyncio.to_thread(self._read_all)
        self.deployments, self.policies, self.known = deployments, policies, known
        self.marker = marker
        # Failures of adapters no longer deployed, loaded or loaded by hand are forgotten.
        keep = {d.adapter_name for d in deployments}
        for slot in self.slots.values():
            keep |= slot.adapters | set(slot.manual)
        self._failing = {n: f for n, f in self._failing.items() if n in keep}
        return True

    def _read_all(
        self,
    ) -> tuple[list[Deployment], dict[str, TrafficPolicy | None], dict[str, list[int]]]:
        deployments = self.source.deployments()
        models = sorted({d.model for d in deployments})
        policies = {m: self.source.traffic(m) for m in models}
        known = {m: list(v) for m, v in self.source.known_models().items()}
        return deployments, policies, known

    def desired_specs(self) -> dict[str, EngineSpec]:
        """Each base model with deployed versions, sized for them, as many replicas as
        configured (its external engines, else ``replicas``), by replica key (pure)."""
        cfg = self.config
        by_base: dict[str, EngineSpec] = {}
        for key in sorted({engine_key(d) for d in self.deployments}):
            by_base[key] = engine_spec(
                key, self.deployments, max_loras=cfg.max_loras, min_lora_rank=cfg.min_lora_rank,
                device=self._device, max_num_seqs=cfg.max_num_seqs,
                cpu_kvcache_gib=cfg.cpu_kvcache_gib,
            )
        self._replicas = replica_specs(by_base, cfg.replicas, cfg.external_engines)
        return {k: spec for k, (_, spec, _) in self._replicas.items()}

    def _note_sizing(self, keys: Iterable[str]) -> None:
        """Keep (and log once) why an engine's flags differ from what a version asked."""
        notes: dict[str, tuple[str, ...]] = {}
        for key in keys:
            note = model_len_note(self._replicas[key][0], self.deployments)
            notes[key] = (note,) if note else ()
            if note and notes[key] != self._notes.get(key):
                log.warning("%s: %s", key, note)
        self._notes = notes

    async def _plan_and_apply(self) -> None:
        desired = self.desired_specs()
        self._note_sizing(desired)
        plan = plan_engines(desired, {k: s.spec for k, s in self.slots.items()})
        for key in plan.stop:
            await self._stop_slot(self.slots.pop(key))
        for key in plan.restart:
            slot = self.slots[key]
            await self._stop_slot(slot)
            slot.spec = desired[key]
            self._launch(slot, reason="restarting with new flags")
        for key in plan.start:
            base, _, external = self._replicas[key]
            slot = EngineSlot(key=key, spec=desired[key], proc=None, url=external or "",
                              base=base, external=external is not None)
            self.slots[key] = slot
            self._launch(slot, reason="starting")

    def _launch(self, slot: EngineSlot, *, reason: str) -> None:
        slot.generation += 1
        slot.state = EngineState.starting
        slot.health_failures = 0
        slot.needs_sync = True
        slot.reverify |= slot.adapters
        slot.adapters = set()
        slot.next_start_at = self.clock()
        if slot.external:
            slot.reason = f"waiting for the external engine at {slot.url} to answer /health"
            return
        proc = EngineProcess(slot.spec, self.config.log_dir)
        proc.start()
        slot.proc, slot.url = proc, proc.url
        slot.reason = f"engine for {slot.spec.served_name} is {reason} (pid {proc.pid})"
        log.info("%s: %s", slot.key, slot.reason)

    async def _stop_slot(self, slot: EngineSlot) -> None:
        slot.state = EngineState.stopped
        slot.reason = "stopped"
        if slot.proc is not None:
            await asyncio.to_thread(slot.proc.stop)

    async def _advance_all(self) -> None:
        await asyncio.gather(*(self._advance(s) for s in self.slots.values()))

    async def _advance(self, slot: EngineSlot) -> None:
        now = self.clock()
        if slot.state is EngineState.down:
            if now >= slot.next_start_at:
                slot.restarts += 1
                index = replica_index(slot.key, slot.base)
                self.observer.engine_restarted(
                    slot.spec.served_name + (f"#{index}" if index else ""))
                if slot.proc is not None:
                    await asyncio.to_thread(slot.proc.stop, 5.0)
                self._launch(slot, reason=f"restarting (attempt {slot.attempts})")
            return
        code = None if slot.proc is None else slot.proc.exit_code()
        healthy: bool | None = None
        due = now - slot.last_health_at >= self.config.health_interval_s
        if code is None and (slot.state is EngineState.starting or due):
            slot.last_health_at = now
            healthy = await EngineAdmin(self.session, slot.url).healthy()
            slot.health_failures = 0 if healthy else slot.health_failures + 1
            if healthy and slot.state is EngineState.ready:
                # Re-check the loaded adapters too: an engine can lose one behind our back.
                slot.needs_sync = True
        started_for = now - (slot.proc.started_at if slot.proc else slot.next_start_at)
        new = next_state(
            slot.state, exited=code is not None, healthy=healthy,
            health_failures=slot.health_failures, started_for=started_for,
            start_timeout=self.config.engine_start_timeout_s,
        )
        if new is slot.state:
            if slot.state is EngineState.starting and slot.proc is not None:
                slot.reason = (f"engine for {slot.spec.served_name} is starting "
                               f"({started_for:.0f} s so far)")
            return
        if new is EngineState.ready:
            slot.state, slot.attempts, slot.needs_sync = new, 0, True
            slot.reason = ""
            log.info("%s: engine ready at %s", slot.key, slot.url)
            return
        # down: record why, kill what is left, schedule the restart.
        slot.attempts += 1
        delay = backoff_delay(slot.attempts, *self.config.restart_backoff_s)
        if code is not None:
            why = f"exited with code {code}"
        elif slot.state is EngineState.starting:
            why = f"did not answer /health within {self.config.engine_start_timeout_s:.0f} s"
        else:
            why = f"failed {slot.health_failures} health checks"
        slot.state = EngineState.down
        slot.reverify |= slot.adapters
        slot.adapters = set()
        slot.next_start_at = now + delay
        slot.reason = (
            f"engine for {slot.spec.served_name} is down: it {why}; "
            f"restarting in {delay:g} s (attempt {slot.attempts})"
        )
        if slot.proc is not None:
            tail = slot.proc.log_tail(5)
            if tail:
                log.warning("%s: %s; last log lines:\n%s", slot.key, slot.reason, tail)
            slot.proc.kill()
        log.warning("%s: %s", slot.key, slot.reason)

    # -- adapters --------------------------------------------------------------------------

    def _place(self) -> None:
        """Which replica of a base holds which adapter, by traffic
        (:mod:`~serving.engines.placement`); a replica whose share changed syncs again."""
        requests, spills = self._demand() if self._demand is not None else ({}, {})
        deployed: dict[str, list[str]] = {}
        for d in self.deployments:
            deployed.setdefault(engine_key(d), []).append(d.adapter_name)
        placement = placements(self.slots.values(), deployed,
                               self._meter.observe(requests, spills))
        for key, want in placement.items():
            if self._placement.get(key) != want:
                self.slots[key].needs_sync = True
        self._placement = placement

    def _placed(self, slot: EngineSlot, name: str) -> bool:
        want = self._placement.get(slot.key)
        return want is None or name in want

    def _missing(self, slot: EngineSlot) -> bool:
        """Whether ``slot`` lacks an adapter it should hold (so the sync before publishing
        has something to load). A change that only moves stages or weights between
        adapters already loaded publishes at once; the sync after publishing still runs
        and corrects whatever the engine holds."""
        waiting = self._waiting()
        wanted = {d.adapter_name for d in self.deployments
                  if engine_key(d) == slot.base and d.adapter_name not in waiting
                  and self._placed(slot, d.adapter_name)}
        wanted |= {n for n in slot.manual if n not in waiting}
        return not wanted <= slot.adapters

    def _waiting(self) -> set[str]:
        """Adapters that failed and whose backoff is not over: not tried again yet."""
        now = self.clock()
        return {n for n, f in self._failing.items() if now < f.retry_at}

    def _retry_due(self) -> bool:
        now = self.clock()
        return any(now >= f.retry_at for f in self._failing.values())

    async def _desired_adapters(
        self, slot: EngineSlot, waiting: set[str]
    ) -> tuple[dict[str, Path], dict[str, str]]:
        """Adapters this engine should hold, fetched (digest-verified) into the store;
        those in ``waiting`` are left out (neither fetched nor loaded)."""
        root = self.config.adapter_root
        out: dict[str, Path] = {}
        errors: dict[str, str] = {}
        for d in self.deployments:
            if (engine_key(d) != slot.base or d.adapter_name in waiting
                    or not self._placed(slot, d.adapter_name)):
                continue
            path = self._paths.get(d.adapter_name)
            if path is None:
                try:
                    root.mkdir(parents=True, exist_ok=True)
                    path = await asyncio.to_thread(self.source.fetch_artifact, d, root)
                except Exception as e:  # one bad artifact must not block the others
                    errors[d.adapter_name] = f"fetch failed: {type(e).__name__}: {e}"
                    continue
                self._paths[d.adapter_name] = path
            out[d.adapter_name] = path
        out.update({n: p for n, p in slot.manual.items() if n not in waiting})
        return out, errors

    async def _sync(self, slot: EngineSlot, *, unload: bool) -> SyncResult:
        """Load missing adapters; with ``unload``, also unload those no longer desired."""
        admin = EngineAdmin(self.session, slot.url)
        waiting = self._waiting()
        desired, fetch_errors = await self._desired_adapters(slot, waiting)
        loaded = await admin.loaded()
        # An adapter that failed to fetch, or waits to be tried again, is neither loaded
        # nor (if loaded) unloaded.
        plan = plan_sync(desired, loaded, keep=set(fetch_errors) | waiting)
        if not unload:
            plan = SyncPlan(load=plan.load)
        plan = await self._verified(slot, plan, fetch_errors)
        # A copy of an adapter another replica already serves (placed here for its
        # traffic) is served here only once its identity probes match, as after a restart.
        elsewhere = {a for s in self.slots.values() if s.base == slot.base
                     and s.key != slot.key and s.state is EngineState.ready for a in s.adapters}
        slot.reverify |= {n for n, _ in plan.load if n in elsewhere}
        result = await apply_plan(admin, plan, self.config.adapter_root)
        await self._reverify(slot, admin, result, dict(plan.load))
        result.errors.update(fetch_errors)
        slot.adapters = (loaded | set(result.loaded)) - set(result.unloaded)
        # Failed adapters are tried again when their backoff is over (_retry_due).
        slot.needs_sync = False
        self._record_attempts(set(desired) | set(result.unloaded), result.errors)
        if result.errors:
            self.observer.error("adapter sync: " + "; ".join(
                f"{n}: {e}" for n, e in sorted(result.errors.items())))
        return result

    async def _verified(self, slot: EngineSlot, plan: SyncPlan, errors: dict[str, str]
                        ) -> SyncPlan:
        """The plan with each deployed adapter to load fetched again: the copy in the store
        is verified against its manifest (a damaged one is rebuilt from the blobs, a blob
        that does not match its digest fails), so an engine never loads bytes that were
        changed on disk since the last fetch; a failure goes into ``errors``."""
        by_name = {d.adapter_name: d for d in self.deployments if engine_key(d) == slot.base}
        load: list[tuple[str, Path]] = []
        for name, path in plan.load:
            d = by_name.get(name)
            if d is not None:
                try:
                    path = await asyncio.to_thread(self.source.fetch_artifact, d,
                                                   self.config.adapter_root)
                except Exception as e:  # one bad artifact must not block the others
                    self._paths.pop(name, None)
                    errors[name] = f"fetch failed: {type(e).__name__}: {e}"
                    continue
                self._paths[name] = path
            load.append((name, path))
        return SyncPlan(load=tuple(load), unload=plan.unload)

    async def _reverify(self, slot: EngineSlot, admin: EngineAdmin, result: SyncResult,
                        paths: dict[str, Path]) -> None:
        """Probe the adapters just re-loaded into a restarted engine; one whose probes do
        not match is unloaded again and fails (degraded, retried with the backoff)."""
        for name in [n for n in result.loaded if n in slot.reverify]:
            matched, detail = await probe_adapter(self.session, slot.url, name, paths[name])
            if matched:
                slot.reverify.discard(name)
                log.info("%s: %s passed its identity probe on engine generation %d: %s",
                         slot.key, name, slot.generation, detail)
                continue
            result.loaded.remove(name)
            result.errors[name] = f"identity probe after the engine restarted: {detail}"
            with contextlib.suppress(RuntimeError, aiohttp.ClientError, TimeoutError):
                await admin.unload(name)

    def _record_attempts(self, tried: set[str], errors: dict[str, str]) -> None:
        """Back off from each failed adapter; forget the failures of those that synced."""
        now = self.clock()
        base, cap = self.config.adapter_retry_backoff_s
        for name, reason in sorted(errors.items()):
            failure = self._failing[name] = next_failure(self._failing.get(name), reason, now,
                                                         base, cap)
            wait = failure.retry_at - now
            if failure.attempts == 1:  # a new failure, or a new reason: worth a warning
                log.warning("adapter %s cannot be synced: %s; trying again in %g s",
                            name, reason, wait)
            else:
                log.info("adapter %s failed again (attempt %d, same reason); trying again "
                         "in %g s", name, failure.attempts, wait)
        for name in sorted(tried - errors.keys()):
            cleared = self._failing.pop(name, None)
            if cleared is not None:
                log.info("adapter %s synced after %d failed attempts", name, cleared.attempts)

    async def load_manual(self, key: str, name: str, path: Path) -> None:
        """Load an adapter by hand (admin route); it must lie in the artifact store."""
        resolved = loadable(path, self.config.adapter_root)
        async with self._lock:
            slot = self.slots[key]
            await EngineAdmin(self.session, slot.url).load(name, resolved)
            slot.manual[name] = resolved
            slot.adapters.add(name)
            self._publish_engines()

    async def unload_manual(self, key: str, name: str) -> None:
        async with self._lock:
            slot = self.slots[key]
            await EngineAdmin(self.session, slot.url).unload(name)
            slot.manual.pop(name, None)
            slot.adapters.discard(name)
            self._publish_engines()

    # -- reporting ------------------------------------------------------------------------

    def _publish_deployed(self) -> None:
        self.observer.deployed(Deployed(
            deployments=tuple(self.deployments), policies=dict(self.policies),
            known={m: tuple(v) for m, v in self.known.items()},
            marker=-1 if self.marker is None else self.marker,
        ))
        self._published = True

    def _publish_degraded(self) -> None:
        """Deployed versions whose adapter failed to sync, with the reason, when it changed."""
        degraded = {(d.model, d.version): self._failing[d.adapter_name].reason
                    for d in self.deployments if d.adapter_name in self._failing}
        if degraded != self._degraded:
            self._degraded = degraded
            self.observer.degraded(degraded)

    def _publish_engines(self) -> None:
        self.observer.engines({
            k: EngineStatus(
                key=k, base=s.base, replica=replica_index(k, s.base), url=s.url,
                state=s.state, reason=s.reason,
                pid=None if s.proc is None else s.proc.pid,
                adapters=frozenset(s.adapters), restarts=s.restarts, generation=s.generation,
                name=s.spec.served_name, max_model_len=s.spec.max_model_len,
                max_loras=s.spec.max_loras,
                notes=self._notes.get(k, ()),
            )
            for k, s in self.slots.items()
        })
