"""`make demo`: the main job end to end on the embedded default, with the `reg` commands a
user would type (SQLite registry, local artifact store, vLLM on CPU, the tiny model).

1. `reg init demo --example`, `git init`, commit; `reg plan` (exit 2: work to do);
2. `reg reconcile recipes --once`: v1 of each model (a progress bar per training run);
3. `reg promote MODEL v1 production` for each model;
4. `reg serve` in the background: one vLLM engine, the OpenAI gateway, the canary controller;
5. users: scripts/demo_traffic.py in the background, chats from many users through the
   official openai client, until the end;
6. v2: new answers in support-bot's data and a ``deploy.rollout`` in its recipe, committed;
   `reg plan`, `reg reconcile --once` trains v2 and starts its rollout; each step is printed
   as it happens (`reg rollout status --json`, polled); it must succeed;
7. v3: another recipe change, committed, `reg reconcile --once`; `reg fault` fails 30% of
   v3's answers (a game day); the controller must roll it back by itself;
8. the summary: versions, stages, rollouts, requests per version from the gateway's
   /metrics, the rollback's reason and values, where to look; then everything it started
   is stopped (also on Ctrl-C or SIGTERM), and no process of it may remain.

Run: .venv/bin/python scripts/demo.py [--dir demo] [--hold]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import demo_lib as lib
from rich.console import Console
from rich.markup import escape
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Third-party progress bars and chatter off, in every child: the demo shows one progress
# display per long step (reg's own), not a tqdm line per step of a library.
QUIET = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
         "TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
         "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false", "VLLM_NO_USAGE_STATS": "1",
         "DO_NOT_TRACK": "1"}
GIT_ID = ["-c", "user.email=demo@example.com", "-c", "user.name=demo"]
READY_TIMEOUT_S = 480.0  # the supervisor restarts an engine silent for 180 s: room for one
ROLLOUT_TIMEOUT_S = 300.0
POLL_S = 2.0  # each poll is a `reg` process: about 0.7 s of CPU


class DemoFailed(RuntimeError):
    """A step did not come out as the demo expects; the message says which and what it saw."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    def __init__(self, workspace: Path, console: Console) -> None:
        self.ws = workspace.resolve()
        self.home = self.ws / ".reg"
        self.out = console
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.started = time.monotonic()
        self.load_at_start = os.getloadavg()
        self.timings: list[tuple[str, float]] = []
        self._section: tuple[str, float] | None = None
        self.background: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stats = self.home / "demo-traffic.json"
        self.traffic: subprocess.Popen[bytes] | None = None
        path = os.environ.get("PYTHONPATH", "")
        self.env = {**os.environ, **QUIET,
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    # this checkout's code first, whatever the editable install points at
                    "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else ""),
                    "REG_HOME": str(self.home), "REG_ADMIN_TOKEN": secrets.token_hex(16),
                    "REG_GATEWAY_URL": self.url}

    # -- output and commands ------------------------------------------------------------

    def section(self, title: str) -> None:
        now = time.monotonic()
        if self._section is not None:
            self.timings.append((self._section[0], now - self._section[1]))
        self._section = (title, now)
        self.out.print()
        self.out.rule(f"[bold]{title}[/bold]  [dim]{now - self.started:.0f}s[/dim]",
                      align="left")

    def note(self, text: str) -> None:
        self.out.print(f"[dim]{text}[/dim]")

    def run(self, argv: list[str], *, show: bool = True, ok: tuple[int, ...] = (0,),
            capture: bool = False) -> subprocess.CompletedProcess[str]:
        if show:
            self.out.print(f"[bold green]$[/bold green] [bold]{escape(_shell(argv))}[/bold]")
        cp = subprocess.run([str(BIN / "reg"), *argv[1:]] if argv[0] == "reg" else argv,
                            cwd=self.ws if self.ws.is_dir() else Path.cwd(), env=self.env,
                            text=True, stdout=subprocess.PIPE if capture else None,
                            stderr=subprocess.PIPE if capture else None, check=False)
        if cp.returncode not in ok:
            detail = f"\n{cp.stdout or ''}{cp.stderr or ''}".rstrip() if capture else ""
            raise DemoFailed(f"`{_shell(argv)}` exited {cp.returncode}{detail}")
        return cp

    def reg_json(self, *args: str) -> Any:
        return json.loads(self.run(["reg", *args, "--json"], show=False, capture=True).stdout)

    def git(self, *args: str) -> None:
        self.out.print(f"[bold green]$[/bold green] [bold]git {escape(_shell(list(args)))}[/bold]")
        subprocess.run(["git", *GIT_ID, *args], cwd=self.ws, check=True, env=self.env)

    def start(self, name: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """A background process in its own process group (stopped with it at the end)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as f:
            proc = subprocess.Popen(argv, cwd=self.ws, env=self.env, stdout=f,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.background.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
        """SIGTERM to the process (reg serve stops its engines), then its whole group."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout_s)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not _group_alive(proc.pid):
                break
            os.killpg(proc.pid, sig)
            deadline = time.monotonic() + 10
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        for _name, proc in reversed(self.background):
            self.stop(proc)

    def leftovers(self) -> list[str]:
        """Processes of this demo still running: its groups, and anything naming the workspace."""
        found = [f"{name} (pid {p.pid})" for name, p in self.background
                 if p.poll() is None or _group_alive(p.pid)]
        pg = subprocess.run(["pgrep", "-af", str(self.ws)], capture_output=True, text=True,
                            check=False)
        mine = {os.getpid(), os.getppid()}
        found += [line for line in pg.stdout.splitlines()
                  if line.split()[0].isdigit() and int(line.split()[0]) not in mine]
        return found

    # -- the steps ----------------------------------------------------------------------

    def workspace(self) -> None:
        self.section("1. The example workspace, in git")
        if self.ws.exists():
            if self.ws.is_dir() and any(self.ws.iterdir()) and not (self.ws / "recipes").is_dir():
                raise DemoFailed(f"{self.ws} holds files and is not a demo workspace; "
                                 "pass --dir with an empty or new folder")
            shutil.rmtree(self.ws)
        self.run(["reg", "init", str(self.ws), "--example"])
        self.git("init", "-q", "-b", "main")
        self.git("add", ".")
        self.git("commit", "-q", "-m", "example recipes")
        self.run(["reg", "plan", "recipes"], ok=(2,))  # exit 2: changes pending
        self.note("exit code 2: changes pending (as `terraform plan -detailed-exitcode`)")

    def first_versions(self) -> None:
        self.section("2. `reg reconcile`: v1 of each model")
        self.run(["reg", "reconcile", "recipes", "--once"])
        self.section("3. Promote v1 of each model to production")
        for model in ("support-bot", "faq-bot", "polite-dpo"):
            self.run(["reg", "promote", model, "v1", "production", "--reason", "first release"])

    def serve(self) -> None:
        self.section("4. `reg serve`: vLLM (CPU) with the adapters, the gateway, the controller")
        log = self.home / "serve.log"
        self.out.print(f"[bold green]$[/bold green] [bold]reg serve --port {self.port} "
                       f"--log-level warning > .reg/serve.log &[/bold]")
        proc = self.start("reg serve", [str(BIN / "reg"), "serve", "--port", str(self.port),
                                        "--log-level", "warning"], log)
        import httpx

        deadline = time.monotonic() + READY_TIMEOUT_S
        with self.out.status("waiting for the engine and the gateway (30-90 s on a CPU)"):
            while True:
                if proc.poll() is not None:
                    raise DemoFailed(f"reg serve exited {proc.returncode}:\n{_tail(log)}")
                try:
                    if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise DemoFailed(f"reg serve not ready after {READY_TIMEOUT_S:.0f}s:\n"
                                     f"{_tail(log)}")
                time.sleep(1)
        self.out.print(f"ready: OpenAI API {self.url}/v1, status page {self.url}/, "
                       f"metrics {self.url}/metrics")

    def users(self) -> None:
        self.section("5. Users: chats through the official openai client, in the background")
        argv = [sys.executable, str(ROOT / "scripts" / "demo_traffic.py"), "--base-url",
                self.url + "/v1", "--model", lib.MODEL, "--rate", f"{lib.RATE:g}",
                "--users", str(lib.USERS), "--concurrency", str(lib.CONCURRENCY),
                "--stats", str(self.stats)]
        self.traffic = self.start("users", argv, self.home / "demo-traffic.log")
        self.out.print(f"{lib.USERS} users send up to {lib.RATE:g} chats a second to "
                       f"{lib.MODEL} ({lib.CONCURRENCY} at once), sticky per user")

    def newest_event(self) -> int:
        events = self.reg_json("events", "--limit", "1")
        return int(events[0]["id"]) if events else 0

    def good_version(self) -> None:
        self.section("6. v2: new answers, rolled out step by step")
        data, recipe = self.ws / lib.DATA, self.ws / lib.RECIPE
        data.write_text(lib.new_answers(data.read_text(encoding="utf-8")), encoding="utf-8")
        recipe.write_text(lib.with_rollout(recipe.read_text(encoding="utf-8")),
                          encoding="utf-8")
        self.note(f"{lib.DATA}: answers start with \"charlie\" instead of \"alpha\"; "
                  f"{lib.RECIPE} gains, under deploy:")
        self.out.print(escape(lib.rollout_yaml(lib.PLAN).rstrip()), highlight=False)
        since = self.newest_event()
        self.git("commit", "-q", "-am", "support-bot: new answers, rolled out progressively")
        self.run(["reg", "plan", "recipes"], ok=(2,))
        self.run(["reg", "reconcile", "recipes", "--once"])
        self.out.print(f"the users meanwhile: {self._tally_line()}")
        row = self.watch(2, since)
        if row["phase"] != "succeeded":
            raise DemoFailed(f"v2's rollout ended {row['phase']}, not succeeded: "
                             f"{row.get('reason')}")

    def bad_version(self) -> None:
        self.section("7. v3: a bad version, rolled back by the controller")
        recipe = self.ws / lib.RECIPE
        recipe.write_text(lib.fewer_steps(recipe.read_text(encoding="utf-8")), encoding="utf-8")
        since = self.newest_event()
        self.git("commit", "-q", "-am", "support-bot: train 100 steps, not 250")
        self.run(["reg", "reconcile", "recipes", "--once"])
        self.note(f"a game day: the gateway fails {lib.FAULT_ERROR_RATE:.0%} of v3's answers "
                  "on purpose, as a broken version would")
        self.run(["reg", "fault", lib.MODEL, "v3", "--error-rate", f"{lib.FAULT_ERROR_RATE:g}",
                  "--reason", "game day: v3 answers badly"])
        row = self.watch(3, since)
        self.run(["reg", "fault", "clear", lib.MODEL, "v3", "--reason", "game day over"])
        if row["phase"] != "rolled_back":
            raise DemoFailed(f"v3's rollout ended {row['phase']}, not rolled back: "
                             f"{row.get('reason')}")

    def watch(self, candidate: int, since: int) -> dict[str, Any]:
        """Each event of the candidate's rollout as it happens, until the rollout ends; its
        final status (`reg rollout status`) then."""
        self.note(f"its rollout, step by step, from the audit log (`reg events --model "
                  f"{lib.MODEL} --since {since} --json`, polled):")
        start, rid, shown, resumed = time.monotonic(), None, set(), 0
        origin: dict[str, Any] | None = None
        while True:
            events = self.reg_json("events", "--model", lib.MODEL, "--since", str(since))
            rid = rid or lib.rollout_of(events, candidate)
            for e in [] if rid is None else lib.rollout_events(events, rid):
                if e["id"] in shown:
                    continue
                shown.add(e["id"])
                origin = origin or dict(e)
                self.out.print(lib.event_line(e, lib.event_seconds(e, origin)),
                               highlight=False)
                if e["kind"] in lib.ENDINGS:
                    self.run(["reg", "rollout", "status", lib.MODEL])
                    row: dict[str, Any] = self.reg_json("rollout", "status", lib.MODEL)
                    return row
                if e["kind"] == "rollout.paused" and resumed < 2:
                    # A step ran out of time short of its sample (a busy machine): what a
                    # person would do, said and done with the real command.
                    resumed += 1
                    self.run(["reg", "rollout", "resume", lib.MODEL, "--reason",
                              "demo: the users are still coming"])
            if time.monotonic() - start > ROLLOUT_TIMEOUT_S:
                raise DemoFailed(f"the rollout of v{candidate} has not ended after "
                                 f"{ROLLOUT_TIMEOUT_S:.0f}s; `reg rollout status {lib.MODEL}` "
                                 "says where it is")
            time.sleep(POLL_S)

    def summary(self) -> None:
        self.section("8. Summary")
        if self.traffic is not None:
            self.stop(self.traffic)
        tally = json.loads(self.stats.read_text(encoding="utf-8"))
        import httpx

        served = lib.requests_per_version(httpx.get(self.url + "/metrics", timeout=10).text)
        versions = self.reg_json("versions", lib.MODEL)
        rollouts = self.reg_json("rollout", "history", lib.MODEL)
        self.note(f"from `reg versions {lib.MODEL} --json`, `reg rollout history {lib.MODEL} "
                  "--json`, the gateway's /metrics (reg_gateway_requests_total) and the users")
        table = Table(title=f"{lib.MODEL}: {tally['requests']} chats from the users, "
                      f"{tally['rate']:g}/s", title_justify="left")
        for col in ("version", "stages now", "its rollout", "answered", "errors",
                    "a user's answer"):
            table.add_column(col)
        for r in lib.summary_rows(versions, rollouts, served, tally["by_version"]):
            table.add_row(r.version, r.stages, r.rollout, str(r.served.ok),
                          str(r.served.errors), escape(r.sample))
        self.out.print(table)
        bad = lib.rollback_of(rollouts)
        if bad is not None:
            self.out.print(f"[bold red]v{bad['candidate']} rolled back[/bold red] at "
                           f"{bad['plan']['steps'][max(int(bad['step']), 0)]['weight']}% "
                           f"canary weight, by the analysis:")
            for check in bad.get("analysis", []):
                self.out.print(f"  {escape(lib.check_text(check))}")
            self.out.print(f"[dim]reason: {escape(str(bad.get('reason', '')))}[/dim]")
        if self.run(["reg", "status", "--help"], show=False, ok=(0, 1, 2),
                    capture=True).returncode == 0:
            self.run(["reg", "status", lib.MODEL])
        self.out.print(f"\n[bold]Where to look[/bold] while `reg serve` runs (`cd "
                       f"{self.ws.name} && reg serve` starts it again; --hold keeps this one):")
        for what, where in (("status page", f"{self.url}/"),
                            ("status JSON", f"{self.url}/api/status"),
                            ("Prometheus metrics", f"{self.url}/metrics"),
                            ("Grafana dashboard", "deploy/grafana/reg-dashboard.json (import)"),
                            ("alert rules", "deploy/prometheus/alerts.yml"),
                            ("the audit log", f"reg history {lib.MODEL}; reg events"),
                            ("logs", ".reg/serve.log; reg runs; reg logs RUN")):
            self.out.print(f"  {what:<20} {where}")

    def _tally_line(self) -> str:
        try:
            t = json.loads(self.stats.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "no answers yet"
        per = ", ".join(f"{v} {c['ok']} ok" + (f" {c['errors']} failed" if c["errors"] else "")
                        for v, c in t["by_version"].items())
        return f"{t['requests']} chats, {t['rate']:g}/s ({per or 'none answered'})"

    def timing(self) -> None:
        if self._section is not None:
            self.timings.append((self._section[0], time.monotonic() - self._section[1]))
            self._section = None
        total = time.monotonic() - self.started
        steps = ", ".join(f"{name.split('.')[0]}: {s:.0f}s" for name, s in self.timings)
        load = os.getloadavg()
        self.out.print(f"\nDemo took {total:.0f}s ({steps}); load average "
                       f"{self.load_at_start[0]:.1f} at the start, {load[0]:.1f} "
                       f"(5 min {load[1]:.1f}) at the end, on {os.cpu_count()} CPUs.")


def _shell(argv: list[str]) -> str:
    import shlex

    return shlex.join(argv)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", type=Path, default=Path("demo"),
                   help="the workspace (replaced; default ./demo)")
    p.add_argument("--hold", action="store_true",
                   help="keep `reg serve` and the users going after the summary until Enter")
    args = p.parse_args()
    console = Console(highlight=False)
    if not (BIN / "reg").is_file():
        console.print(f"[red]{BIN / 'reg'} not found[/red]: run `make demo` (it installs)")
        return 1
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    demo = Demo(args.dir, console)
    code = 0
    try:
        demo.workspace()
        demo.first_versions()
        demo.serve()
        demo.users()
        demo.good_version()
        demo.bad_version()
        demo.summary()
        if args.hold:
            console.print("\n[bold]Holding[/bold]: press Enter to stop everything.")
            input()
    except DemoFailed as e:
        console.print(f"\n[red bold]Demo failed:[/red bold] {escape(str(e))}")
        code = 1
    except KeyboardInterrupt:
        console.print("\n[yellow]Interrupted[/yellow]: stopping what the demo started.")
        code = 130
    finally:
        demo.stop_all()
        left = demo.leftovers()
        if left:
            console.print("[red bold]still running:[/red bold] " + "; ".join(left))
            code = code or 1
        else:
            console.print("Stopped everything the demo started; no process of it is left.")
        demo.timing()
    if code == 0:
        console.print(f"[green bold]Demo done.[/green bold] The workspace is {args.dir} "
                      f"(registry in {args.dir}/.reg).")
    return code


if __name__ == "__main__":
    sys.exit(main())
