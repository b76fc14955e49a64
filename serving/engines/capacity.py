"""Adapter slots: may one more version be deployed on an engine?

vLLM's ``--max-loras`` is how many adapters one batch can mix. Deploying more
versions on one base model than that still works, but requests for the extra
adapters wait for a slot: throughput falls off a cliff under mixed traffic. So
``reg promote`` refuses (``--force`` overrides, and says what it costs).
:func:`check_capacity` is pure; :func:`check_promote` reads the registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from recipes.core.errors import RegError
from serving.source import Deployment, RegistrySource


class CapacityError(RegError):
    """More versions would be deployed on one engine than it has adapter slots."""


def per_engine(deployments: Iterable[Deployment]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for d in deployments:
        out.setdefault(d.base_model_path, []).append(d.adapter_name)
    return {k: sorted(v) for k, v in out.items()}


def after_promote(
    deployments: Iterable[Deployment], target: Deployment, stage: str
) -> list[Deployment]:
    """The deployed set once ``stage`` of ``target.model`` points at ``target``."""
    out: list[Deployment] = []
    found = False
    for d in deployments:
        if d.model == target.model:
            stages = tuple(s for s in d.stages if s != stage)
            if d.version == target.version:
                stages, found = tuple(sorted({*stages, stage})), True
            d = replace(d, stages=stages)
        if d.stages:
            out.append(d)
    if not found:
        out.append(replace(target, stages=(stage,)))
    return out


def check_capacity(
    deployments: Iterable[Deployment], max_loras: int, *, force: bool = False
) -> list[str]:
    """Refuse (or, with ``force``, warn) when an engine would hold more adapters than slots."""
    warnings: list[str] = []
    for base, names in per_engine(deployments).items():
        if len(names) <= max_loras:
            continue
        text = (
            f"{len(names)} versions would be deployed on the engine for {base} "
            f"({', '.join(names)}), but it has {max_loras} adapter slots (REG_MAX_LORAS)"
        )
        if not force:
            raise CapacityError(
                text,
                hint="clear a stage (`reg traffic` to 0, then move it), raise REG_MAX_LORAS "
                "(more memory per engine), or pass --force: requests for adapters beyond "
                "the slots wait for one, and throughput under mixed traffic falls sharply",
            )
        warnings.append(text + "; forced: expect lower throughput under mixed traffic")
    return warnings


def check_promote(
    registry: Any, model: str | None, version: str | int, stage: str, *, max_loras: int,
    force: bool = False,
) -> list[str]:
    """:func:`check_capacity` for ``reg promote MODEL VERSION STAGE`` against the registry."""
    v = registry.resolve(model, version)
    source = RegistrySource(registry)
    current = source.deployments()
    target = Deployment(
        model=v.model, version=v.number, stages=(stage,), digest=v.artifact_digest or "",
        base_model_path=v.base_model_path, adapter_rank=v.adapter_rank or 8,
    )
    return check_capacity(after_promote(current, target, stage), max_loras, force=force)
