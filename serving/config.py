"""Serving settings: the gateway's limits and tokens, and how engines are sized.

Read from the environment by :meth:`ServeConfig.from_env` (the CLI overrides
host and port); tests build one directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from recipes.core.errors import RegError


class ConfigError(RegError):
    """A serving setting is malformed."""


# Whole-number settings read from the environment that must be at least 1.
_POSITIVE = (("max_concurrency", "REG_MAX_CONCURRENCY"), ("max_loras", "REG_MAX_LORAS"),
             ("max_body_bytes", "REG_MAX_BODY_BYTES"), ("replicas", "REG_REPLICAS"))


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    # Admin routes (policy, adapters, reload) need `Authorization: Bearer <admin_token>`;
    # with no token set they are disabled (403), never open.
    # Secrets: kept out of the repr, so a logged or printed config never shows them.
    admin_token: str | None = field(default=None, repr=False)
    # When non-empty, the OpenAI routes need `Authorization: Bearer <one of these>`.
    api_keys: frozenset[str] = field(default=frozenset(), repr=False)
    # Requests answered at once; beyond it the gateway answers 429 with Retry-After.
    max_concurrency: int = 64
    retry_after_s: int = 1
    # The largest request body read, on every route (413 beyond it, refused before reading
    # when Content-Length says so). 4 MiB is about a million tokens of text: longer than
    # any context an engine here runs with.
    max_body_bytes: int = 4 * 1024 * 1024
    # Where fetched, digest-verified adapters live; engines load only from here.
    adapter_root: Path = Path(".reg/serving/adapters")
    log_dir: Path = Path(".reg/serving/logs")
    # Engine sizing.
    max_loras: int = 4
    min_lora_rank: int = 8
    max_num_seqs: int = 16
    cpu_kvcache_gib: int = 1
    engine_start_timeout_s: float = 180.0
    # Supervision: how often the registry marker and engine health are checked.
    poll_interval_s: float = 0.2
    health_interval_s: float = 1.0
    restart_backoff_s: tuple[float, float] = (1.0, 30.0)
    # An adapter that failed to fetch or load is tried again after base * 2**k s, capped.
    adapter_retry_backoff_s: tuple[float, float] = (1.0, 60.0)
    # Upstream timeouts: connecting (a dead engine fails fast) and the whole answer.
    connect_timeout_s: float = 2.0
    request_timeout_s: float = 300.0
    max_shadow_in_flight: int = 16
    # The canary controller `reg serve` hosts: seconds between its passes.
    controller_interval_s: float = 1.0
    # Local engines started per base model (`reg serve --replicas N`, REG_REPLICAS).
    replicas: int = 1
    # Engines already running elsewhere: base model path -> their URLs, one replica each
    # (not started or supervised); a base listed here gets these, not ``replicas``.
    external_engines: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # How often each replica's /metrics is scraped, and when its load is stale.
    load_scrape_interval_s: float = 0.075
    load_stale_after_s: float = 2.0

    @property
    def url(self) -> str:
        """Where a client on this machine reaches the gateway (``reg fault`` uses it)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> ServeConfig:
        e = dict(os.environ if env is None else env)
        home = Path(e.get("REG_HOME", ".reg"))
        keys = frozenset(k.strip() for k in e.get("REG_API_KEYS", "").split(",") if k.strip())
        values: dict[str, object] = {
            "admin_token": e.get("REG_ADMIN_TOKEN") or None,
            "api_keys": keys,
            "adapter_root": home / "serving" / "adapters",
            "log_dir": home / "serving" / "logs",
        }
        for name, var in (*_POSITIVE, ("max_num_seqs", "REG_MAX_NUM_SEQS")):
            if var in e:
                try:
                    values[name] = int(e[var])
                except ValueError as exc:
                    raise ConfigError(f"{var}={e[var]!r} is not a whole number",
                                      hint=f"set {var} to a positive integer") from exc
        if e.get("REG_EXTERNAL_ENGINES"):
            # BASE_MODEL_PATH=URL,...: engines someone else runs (not started or restarted);
            # a base named again is one more replica of it.
            engines: dict[str, tuple[str, ...]] = {}
            for item in e["REG_EXTERNAL_ENGINES"].split(","):
                base, sep, url = item.strip().rpartition("=")
                if not sep or not base or not url.startswith("http://"):
                    raise ConfigError(
                        f"REG_EXTERNAL_ENGINES item {item!r} is not BASE_MODEL_PATH=http://HOST:PORT",
                        hint="e.g. REG_EXTERNAL_ENGINES=/models/tiny=http://127.0.0.1:8100,"
                             "/models/tiny=http://127.0.0.1:8101 (two replicas)")
                engines[base] = (*engines.get(base, ()), url.rstrip("/"))
            values["external_engines"] = engines
        values.update(overrides)
        cfg = cls(**values)  # type: ignore[arg-type]
        low = [f"{var}={getattr(cfg, name)}" for name, var in _POSITIVE if getattr(cfg, name) < 1]
        if low:
            raise ConfigError(f"{', '.join(low)}: must be at least 1",
                              hint="set it to a positive integer, or unset it for the default")
        return cfg
