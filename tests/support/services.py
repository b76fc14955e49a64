"""Real servers for integration tests, started on loopback and stopped by the caller.

PostgreSQL comes from the Debian package (`make services` installs it). It is
started in a temporary directory owned by the ``postgres`` user when the tests
run as root (initdb refuses root), on a free port, with ``fsync=off`` since a
test database need not survive a power cut.

Prometheus (the Debian package too) scrapes the targets a test names every second
(:func:`start_prometheus`); :func:`wait_scraped` waits until every target has been
scraped after a given moment, which is how a test knows what Prometheus has seen.

Usage from a fixture::

    url, stop = start_postgres(tmp_path_factory.mktemp("pg"))
    try:
        yield url
    finally:
        stop()

When ``REG_REQUIRE_SERVICES=1`` (set by ``make test``), a missing server is a
failure, not a skip: call :func:`service_missing` to get that behaviour.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REQUIRE_ENV = "REG_REQUIRE_SERVICES"


def services_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


def service_missing(what: str) -> None:
    """Skip the test, or fail it when the test command promised real services."""
    message = f"{what} is not installed; run `make services` (or bash scripts/install_services.sh)"
    if services_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    def major(p: str) -> int:
        name = Path(p).parent.parent.name
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=major)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres_user() -> tuple[list[str], int | None, int | None]:
    """Command prefix and uid/gid so server binaries never run as root."""
    if os.geteuid() != 0:
        return [], None, None
    pw = pwd.getpwnam("postgres")
    return ["runuser", "-u", "postgres", "--"], pw.pw_uid, pw.pw_gid


def start_postgres(tmpdir: Path, *, timeout_s: float = 30.0) -> tuple[str, Callable[[], None]]:
    """Start a throwaway PostgreSQL on 127.0.0.1 and a free port.

    Returns ``(url, stop)``: a SQLAlchemy URL (psycopg 3) of database
    ``postgres`` as superuser ``postgres`` (trust auth on loopback), and a
    function that stops the server and removes its files. Raises
    FileNotFoundError when PostgreSQL is not installed.
    """
    bindir = postgres_bin_dir()
    if bindir is None:
        raise FileNotFoundError("initdb (PostgreSQL server) not found")
    prefix, uid, gid = _as_postgres_user()
    if uid is not None and gid is not None:
        # As root the server runs as `postgres`, which must reach its directory for the
        # whole session. pytest re-privatises its own tmp tree (chmod 700) whenever another
        # session starts, so the server lives in its own directory under the system tmp.
        root = Path(tempfile.mkdtemp(prefix="reg-pg-"))
        os.chown(root, uid, gid)
    else:
        root = Path(tmpdir) / f"pg-{uuid.uuid4().hex[:8]}"
        root.mkdir(parents=True)
    data = root / "data"
    sock = root / "sock"
    sock.mkdir()
    if uid is not None and gid is not None:
        os.chown(sock, uid, gid)
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
         "--no-sync", "-E", "UTF8", "--locale", "C"],
        check=True, capture_output=True, timeout=120,
    )
    port = free_port()
    opts = (f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
    subprocess.run(
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", str(int(timeout_s)),
         "-l", str(root / "server.log"), "-o", opts, "start"],
        check=True, capture_output=True, timeout=timeout_s + 10,
    )

    # The postmaster's pid, so stop() can end the server even if pg_ctl cannot.
    postmaster_pid = int((data / "postmaster.pid").read_text().split()[0])

    def stop() -> None:
        done = subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True, timeout=60, check=False,
        )
        if done.returncode != 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster_pid, signal.SIGQUIT)  # immediate shutdown
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(postmaster_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        shutil.rmtree(root, ignore_errors=True)

    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + timeout_s
    while True:  # pg_ctl -w waits for the socket; also wait for TCP on loopback
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                stop()
                raise
            time.sleep(0.05)
    return url, stop


def create_database(server_url: str, name: str | None = None) -> str:
    """Create a fresh, empty database on a server started by :func:`start_postgres`.

    Returns its URL. One database per test keeps tests independent without
    restarting the server.
    """
    import psycopg

    name = name or f"t_{uuid.uuid4().hex[:12]}"
    base, _, _ = server_url.rpartition("/")
    dsn = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base}/{name}"


def start_prometheus(tmpdir: Path, targets: Sequence[str], *, scrape_interval_s: int = 1,
                     timeout_s: float = 30.0) -> tuple[str, Callable[[], None]]:
    """Start a throwaway Prometheus on 127.0.0.1 and a free port, scraping ``targets``
    (``host:port`` each, path ``/metrics``) every ``scrape_interval_s`` seconds, as job
    ``reg``.

    Returns ``(url, stop)``: its base URL, once ``/-/ready`` answers, and a function
    that stops it and removes its files. Raises FileNotFoundError when Prometheus is
    not installed.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise FileNotFoundError("prometheus not found")
    root = Path(tmpdir) / f"prometheus-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    config = root / "prometheus.yml"
    listed = ", ".join(f"'{t}'" for t in targets)
    config.write_text(
        "global:\n"
        f"  scrape_interval: {scrape_interval_s}s\n"
        f"  scrape_timeout: {scrape_interval_s}s\n"
        "scrape_configs:\n"
        "  - job_name: reg\n"
        f"    static_configs: [{{targets: [{listed}]}}]\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)

    wait_answering(proc, url + "/-/ready", "prometheus", root / "prometheus.log", stop,
                   timeout_s, poll_s=0.1)
    return url, stop


def prometheus_query(url: str, expr: str) -> list[dict[str, Any]]:
    """The result of an instant query now (a test's own look, apart from the product's)."""
    import httpx

    body = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=10).json()
    if body.get("status") != "success":
        raise RuntimeError(f"prometheus refused {expr}: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_scraped(url: str, after: float, *, targets: int = 1, timeout_s: float = 60.0) -> float:
    """Wait until each of ``targets`` targets was scraped, and up, at a time >= ``after``
    (UNIX seconds): then Prometheus holds what they exported before ``after``.

    Returns the oldest of those scrapes' times. The first scrape of a new target comes
    some seconds after Prometheus starts (its target discovery), so this waits rather than
    sleeping a fixed time.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        up = {frozenset(r["metric"].items()): float(r["value"][1])
              for r in prometheus_query(url, "up")}
        stamps = [float(r["value"][1]) for r in prometheus_query(url, "timestamp(up)")]
        if (len(stamps) >= targets and all(v == 1 for v in up.values())
                and min(stamps) >= after):
            return min(stamps)
        if time.monotonic() > deadline:
            raise TimeoutError(f"prometheus at {url} has not scraped {targets} target(s) "
                               f"after {after:.3f}: up={list(up.values())}, at={stamps}")
        time.sleep(0.2)


def running_prometheus(tmpdir: Path, targets: Sequence[str]) -> Iterator[str]:
    """Body of a fixture: a real Prometheus scraping ``targets`` every second (its URL).

    Skips, or fails under REG_REQUIRE_SERVICES=1, where Prometheus is not installed.
    """
    try:
        url, stop = start_prometheus(tmpdir, targets)
    except FileNotFoundError:
        service_missing("Prometheus")
        raise  # unreachable: service_missing skips or fails
    try:
        yield url
    finally:
        stop()


def wait_answering(proc: subprocess.Popen[bytes], url: str, what: str, log_path: Path,
                   stop: Callable[[], None], timeout_s: float, *, poll_s: float = 0.2) -> None:
    """Wait until ``url`` answers 200; on the server's exit or the timeout, ``stop()`` it
    and raise with the tail of its log."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            stop()
            raise RuntimeError(f"{what} exited with {proc.returncode}: "
                               f"{log_path.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop()
            raise TimeoutError(f"{what} at {url} not answering after {timeout_s} s: "
                               f"{log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(poll_s)
