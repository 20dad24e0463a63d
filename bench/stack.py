"""The real SyncRoot stack as separate processes on loopback, for benchmarks and the fault suite.

    with Stack(gunicorn_workers=3, beat=False) as stack:
        stack.session.post(f"{stack.api_url}/contacts", json={...})
        stack.hubspot.stats()                 # SandboxControl of each sandbox
        stack.kill("forwarder")               # kill -9 the worker's process group
        stack.restart("web")                  # SIGTERM, wait, start again, wait until ready

Each run gets a fresh PostgreSQL database (`syncroot_bench`: dropped, created, migrated) and
Redis database 14 (flushed; no other database is touched). The API (gunicorn) and the Celery
processes run the commands of the Procfile, so the bench measures what `make run` deploys. Logs
go to var/bench/<process>.log. Every process gets its own session (process group), so a Ctrl-C
in the terminal reaches only the bench, which then stops everything in order.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import os
import platform
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg2
import redis
import requests
import requests.adapters
from psycopg2 import sql

from sandbox.testing import SandboxControl

REPO = Path(__file__).resolve().parents[1]
LOG_DIR = REPO / "var" / "bench"
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
SANDBOX_TOKEN = "sandbox-token"
SECRET = "sandbox-secret"
WEBHOOK_TOKEN = "bench-webhook-token"
ORGANIZATION_ID = "00D000000000001EAA"
WORKERS = ("forwarder", "dlq", "webhooks")
# Used when the Procfile lacks a process (it is the source of truth when present).
DEFAULT_COMMANDS = {
    "web": "gunicorn syncroot.wsgi:application -c deploy/gunicorn.conf.py",
    "forwarder": "celery -A syncroot worker -Q forwarder -n forwarder@%h --concurrency ${FORWARDER_CONCURRENCY:-2}"
    " -E --without-gossip --without-mingle --loglevel ${LOG_LEVEL:-INFO}",
    "dlq": "celery -A syncroot worker -Q dlq -n dlq@%h --concurrency ${DLQ_CONCURRENCY:-1}"
    " -E --without-gossip --without-mingle --loglevel ${LOG_LEVEL:-INFO}",
    "webhooks": "celery -A syncroot worker -Q webhooks.salesforce,webhooks.hubspot -n webhooks@%h"
    " --concurrency ${WEBHOOKS_CONCURRENCY:-2} -E --without-gossip --without-mingle --loglevel ${LOG_LEVEL:-INFO}",
    "beat": "celery -A syncroot beat --loglevel ${LOG_LEVEL:-INFO}",
}


def procfile_commands(path: Path = REPO / "Procfile") -> dict[str, str]:
    commands = dict(DEFAULT_COMMANDS)
    if path.exists():
        for line in path.read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line.strip())
            if match:
                commands[match.group(1)] = match.group(2)
    return commands


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine() -> dict[str, Any]:
    """What the numbers were measured on (they mean little without it)."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "load_1m": round(os.getloadavg()[0], 2),
        "revision": revision or None,  # the working tree may hold uncommitted changes on top
    }


def add_settings_option(parser: argparse.ArgumentParser) -> None:
    """`--set NAME=VALUE` (repeatable): any SyncRoot setting for the stack's processes; `dict(args.set)`."""

    def setting(text: str) -> tuple[str, str]:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
        return name, value

    parser.add_argument(
        "--set", action="append", default=[], type=setting, metavar="NAME=VALUE", help="any SyncRoot setting"
    )


def report(result: dict[str, Any], print_table: Callable[[dict[str, Any]], None]) -> int:
    """A bench's end: its table for people, then its result as the last stdout line (bench.all
    reads it from there). The exit status."""
    print_table(result)
    print(json.dumps(result))
    return 0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Process:
    name: str
    command: str  # run by bash, like honcho runs a Procfile line
    env: dict[str, str]
    ready: Callable[[], bool]
    popen: subprocess.Popen | None = None
    log: IO[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class Stack:
    """Start with `with Stack(...) as stack:`; see the module docstring."""

    gunicorn_workers: int = 3
    beat: bool = False
    workers: tuple[str, ...] = WORKERS
    forwarders: int = 1  # forwarder processes (forwarder, forwarder2, …) when "forwarder" is in workers
    env: dict[str, str] = field(default_factory=dict)  # extra settings for every SyncRoot process
    hubspot_config: dict[str, Any] = field(default_factory=dict)  # /_sandbox/config after start
    salesforce_config: dict[str, Any] = field(default_factory=dict)
    database: str = "syncroot_bench"
    redis_db: int = 14
    # A private PostgreSQL cluster or redis-server (the fault suite stops and restarts its own);
    # the defaults are the machine's shared servers, of which only database/redis_db are touched.
    pg_port: int = 5432
    redis_port: int = 6379
    ready_timeout: float = 60.0
    log_dir: Path = LOG_DIR
    quiet: bool = False

    def __post_init__(self) -> None:
        self.processes: dict[str, Process] = {}
        self.api_url = ""
        self.token = ""
        self.session = requests.Session()
        self.hubspot: SandboxControl
        self.salesforce: SandboxControl
        self._lock: IO[str] | None = None
        self._hostname = socket.gethostname()
        self._celery = None
        self.process_env: dict[str, str] = {}  # what every SyncRoot process was started with

    # --- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        previous = signal.getsignal(signal.SIGTERM) if _main_thread() else None
        if _main_thread():  # a SIGTERM to the bench tears the stack down like Ctrl-C does
            signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        self._previous_sigterm = previous
        atexit.register(self.down)
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
        if _main_thread() and self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)

    def up(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        started = time.monotonic()
        self._fresh_database()
        self._fresh_redis()
        api_port, hs_port, sf_port = free_port(), free_port(), free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.hubspot_url = f"http://127.0.0.1:{hs_port}"
        self.salesforce_url = f"http://127.0.0.1:{sf_port}"
        self.hubspot = SandboxControl(self.hubspot_url, _plain_session())
        self.salesforce = SandboxControl(self.salesforce_url, _plain_session())
        env = self.syncroot_env(api_port=api_port)
        self.process_env = env
        self._say("migrating a fresh database")
        self._manage(env, "migrate", "--no-input", "-v0")
        self.token = self._manage(env, "create_api_token", "bench").strip().splitlines()[-1]
        self.session = self.new_session()
        self._define(env, api_port=api_port, hs_port=hs_port, sf_port=sf_port)
        for name in self.processes:  # all at once: each imports Django for seconds
            self._spawn(name)
        for name in self.processes:
            self._ready(name)
        self._say(f"stack ready in {time.monotonic() - started:.1f}s (logs in {self.log_dir})")

    def down(self) -> None:
        """Stop every process (workers first); safe to call twice and from atexit."""
        ignoring = _main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignoring else None
        try:
            for name in reversed(list(self.processes)):
                self.stop(name)
            if self._celery is not None:
                self._celery.close()
                self._celery = None
        finally:
            if ignoring:
                signal.signal(signal.SIGINT, previous)
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    # --- one process -----------------------------------------------------------------------------
    def start(self, name: str) -> None:
        """Start process `name` (no-op when running) and wait until it is ready."""
        if not self.processes[name].alive:
            self._spawn(name)
            self._ready(name)

    def add_web(self, name: str, env: dict[str, str]) -> str:
        """A second API (gunicorn) with these settings changed, e.g. another DATABASE_URL; its URL.

        It runs the Procfile's web command on a port of its own and stops with the stack.
        """
        port = free_port()
        changed = {**self.process_env, **env, "GUNICORN_BIND": f"127.0.0.1:{port}"}
        url = f"http://127.0.0.1:{port}"
        self.processes[name] = Process(name, procfile_commands()["web"], changed, _answers(f"{url}/readyz"))
        self._spawn(name)
        self.wait_ready(name)
        return url

    def add_sandbox(
        self, name: str, kind: str, *, webhook_url: str, args: tuple[str, ...] = (), config: dict | None = None
    ) -> SandboxControl:
        """Another sandbox of `kind`, e.g. a second HubSpot portal (`args=("--portal-id", "62516")`, as
        `make run`'s hubspot2), on a port of its own; its control plane (`.url` is its address).

        Its webhooks go to `webhook_url`; `config` is set once it answers. It stops with the stack.
        """
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = (
            f"{shlex.quote(PYTHON)} -m sandbox {kind} --port {port} --webhook-url {shlex.quote(webhook_url)} "
            + " ".join(shlex.quote(arg) for arg in args)
        )
        self.processes[name] = Process(name, command, self.process_env, _answers(f"{url}/_sandbox/config"))
        self._spawn(name)
        self.wait_ready(name)
        control = SandboxControl(url, _plain_session())
        if config:
            control.config(**config)
        return control

    def manage_with(self, env: dict[str, str], *args: str) -> str:
        """`manage.py <args>` with these settings changed (e.g. another DATABASE_URL)."""
        return self._manage({**self.process_env, **env}, *args)

    def _spawn(self, name: str) -> None:
        proc = self.processes[name]
        if proc.log is None or proc.log.closed:
            proc.log = open(self.log_dir / f"{name}.log", "ab")  # held for the process's life
        proc.log.write(f"\n=== {time.strftime('%H:%M:%S')} start {name}: {proc.command}\n".encode())
        proc.log.flush()
        proc.popen = subprocess.Popen(
            ["bash", "-c", f"exec {proc.command}"], cwd=REPO, env=proc.env, stdin=subprocess.DEVNULL,
            stdout=proc.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def _ready(self, name: str) -> None:
        self.wait_ready(name)
        if name == "hubspot" and self.hubspot_config:
            self.hubspot.config(**self.hubspot_config)
        if name == "salesforce" and self.salesforce_config:
            self.salesforce.config(**self.salesforce_config)

    def wait_ready(self, name: str, timeout: float | None = None) -> None:
        proc = self.processes[name]
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while True:
            if not proc.alive:
                raise RuntimeError(f"{name} exited during start-up:\n{self.log_tail(name)}")
            with contextlib.suppress(Exception):
                if proc.ready():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready within {timeout or self.ready_timeout}s:\n{self.log_tail(name)}")
            time.sleep(0.1)

    def kill(self, name: str, sig: int = signal.SIGKILL, *, group: bool = True) -> None:
        """Send `sig` to the process (group: with its children, e.g. a prefork pool) and reap it on SIGKILL."""
        proc = self.processes[name]
        if not proc.alive:
            return
        assert proc.popen is not None
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.popen.pid, sig)
            else:
                os.kill(proc.popen.pid, sig)
        if sig == signal.SIGKILL:
            proc.popen.wait(timeout=10)

    def stop(self, name: str, timeout: float = 15.0) -> None:
        """SIGTERM (a Celery worker finishes its running task), then SIGKILL after `timeout`."""
        proc = self.processes.get(name)
        if proc is None or proc.popen is None:
            return
        if proc.alive:
            self.kill(name, signal.SIGTERM)
            try:
                proc.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill(name, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):  # leftovers of the group (pool children)
            os.killpg(proc.popen.pid, signal.SIGKILL)
        if proc.log is not None:
            proc.log.close()

    def restart(self, name: str) -> None:
        self.stop(name)
        self.start(name)

    def pid(self, name: str) -> int | None:
        proc = self.processes[name]
        return proc.popen.pid if proc.alive and proc.popen else None

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each process used so far, its children (pool, workers) included."""
        groups = {proc.popen.pid: name for name, proc in self.processes.items() if proc.alive and proc.popen}
        totals = dict.fromkeys(groups.values(), 0.0)
        for fields in _proc_stats():
            pid, pgrp = int(fields[0]), int(fields[4])
            if pgrp in groups:
                reaped = sum(map(int, fields[15:17])) if pid == pgrp else 0  # children that exited
                totals[groups[pgrp]] += (int(fields[13]) + int(fields[14]) + reaped) / _TICKS
        return {name: round(value, 2) for name, value in totals.items()}

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    # --- helpers for benches -----------------------------------------------------------------------
    def manage(self, *args: str) -> str:
        """Run `manage.py <args>` with the stack's settings; its stdout (raises on failure)."""
        return self._manage(self.process_env, *args)

    def new_session(self, pool: int = 16) -> requests.Session:
        """A pooled session carrying the API token (one per client thread)."""
        session = _plain_session(pool)
        session.headers["Authorization"] = f"Bearer {self.token}"
        return session

    def db(self) -> Any:
        """An autocommit psycopg2 connection to the bench database (close it when done)."""
        connection = psycopg2.connect(dbname=self.database, host="127.0.0.1", port=self.pg_port, connect_timeout=5)
        connection.autocommit = True
        return connection

    def link_counts(self) -> dict[str, dict[str, int]]:
        """ProviderLink rows per provider and status."""
        with contextlib.closing(self.db()) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT provider, status, count(*) FROM providers_providerlink GROUP BY 1, 2")
            counts: dict[str, dict[str, int]] = {}
            for provider, status, count in cursor.fetchall():
                counts.setdefault(provider, {})[status] = count
            return counts

    def syncroot_env(self, *, api_port: int) -> dict[str, str]:
        """The environment of every SyncRoot process: the names bin/run sets for `make run`."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
        redis_url = f"redis://127.0.0.1:{self.redis_port}/{self.redis_db}"
        api_url = f"http://127.0.0.1:{api_port}"
        return {
            **base,
            "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "DJANGO_SETTINGS_MODULE": "syncroot.settings",
            "DJANGO_DEBUG": "false",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            "GUNICORN_LOG_LEVEL": "warning",
            "DATABASE_URL": f"postgres://127.0.0.1:{self.pg_port}/{self.database}",
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "PUBLIC_BASE_URL": api_url,
            "GUNICORN_BIND": f"127.0.0.1:{api_port}",
            "GUNICORN_WORKERS": str(self.gunicorn_workers),
            "SALESFORCE_LOGIN_URL": self.salesforce_url,
            "SALESFORCE_CLIENT_ID": "sandbox-client",
            "SALESFORCE_CLIENT_SECRET": SECRET,
            "SALESFORCE_ORGANIZATION_ID": ORGANIZATION_ID,
            "SALESFORCE_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "SALESFORCE_EVENT_SECRET": SECRET,
            "SALESFORCE_RECORD_URL": self.salesforce_url + "/services/data/v59.0/sobjects/Contact/{id}",
            "HUBSPOT_BASE_URL": self.hubspot_url,
            "HUBSPOT_ACCESS_TOKEN": SANDBOX_TOKEN,
            "HUBSPOT_CLIENT_SECRET": SECRET,
            "HUBSPOT_APP_ID": "1234567",
            "HUBSPOT_RATE_LIMIT": "100/10 seconds",
            "HUBSPOT_RECORD_URL": self.hubspot_url + "/crm/v3/objects/contacts/{id}",
            **self.env,
        }

    # --- internals ---------------------------------------------------------------------------------
    def _define(self, env: dict[str, str], *, api_port: int, hs_port: int, sf_port: int) -> None:
        commands = procfile_commands()
        hooks = {
            "hubspot": (hs_port, f"{self.api_url}/webhooks/hubspot"),
            "salesforce": (sf_port, f"{self.api_url}/webhooks/salesforce?token={WEBHOOK_TOKEN}"),
        }
        for kind, (port, hook) in hooks.items():
            url = f"http://127.0.0.1:{port}"
            command = f"{shlex.quote(PYTHON)} -m sandbox {kind} --port {port} --webhook-url {shlex.quote(hook)}"
            self.processes[kind] = Process(kind, command, env, _answers(f"{url}/_sandbox/config"))
        self.processes["web"] = Process("web", commands["web"], env, _answers(f"{self.api_url}/readyz"))
        for name in self.workers:
            self.processes[name] = Process(name, commands[name], env, self._pings(name))
        if "forwarder" in self.workers:
            # More forwarder processes, as more machines would run: each its own Celery node.
            for index in range(2, self.forwarders + 1):
                name = f"forwarder{index}"
                command = commands["forwarder"].replace("-n forwarder@%h", f"-n {name}@%h")
                self.processes[name] = Process(name, command, env, self._pings(name))
        if self.beat:
            # Its own schedule file, so a `make run` beat on this machine keeps its own (last flag wins).
            beat = f"{commands['beat']} --schedule {shlex.quote(str(self.log_dir / 'celerybeat-schedule'))}"
            self.processes["beat"] = Process("beat", beat, env, _alive_for(self, "beat", seconds=1.5))

    def _pings(self, name: str) -> Callable[[], bool]:
        def ready() -> bool:
            if self._celery is None:
                from celery import Celery

                self._celery = Celery("bench", broker=f"redis://127.0.0.1:{self.redis_port}/{self.redis_db}")
            replies = self._celery.control.ping(destination=[f"{name}@{self._hostname}"], timeout=0.5)
            return bool(replies)

        return ready

    def _manage(self, env: dict[str, str], *args: str) -> str:
        done = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180
        )
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def _fresh_database(self) -> None:
        connection = psycopg2.connect(dbname="postgres", host="127.0.0.1", port=self.pg_port, connect_timeout=5)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                name = sql.Identifier(self.database)
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(name))
        finally:
            connection.close()

    def _fresh_redis(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.redis_port, db=self.redis_db, socket_connect_timeout=2)
        try:
            client.flushdb()
        finally:
            client.close()

    def _take_lock(self) -> None:
        """One bench stack at a time on the machine, from any checkout: they share the database
        name and Redis DB 14 (and a checkout's var/bench)."""
        self._lock = open(MACHINE_LOCK, "w")  # held until down()
        waited = False
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if not waited:
                    self._say("another bench stack is running; waiting for it to finish")
                    waited = True
                time.sleep(1)

    def _say(self, message: str) -> None:
        if not self.quiet:
            print(f"[stack] {message}", file=sys.stderr, flush=True)


MACHINE_LOCK = Path(tempfile.gettempdir()) / "syncroot-bench.lock"
_OWN_PREFIXES = (
    "SALESFORCE_", "HUBSPOT_", "DJANGO_", "GUNICORN_", "SYNC_", "OUTBOX_", "RECONCILE_", "API_", "CRM_",
)  # fmt: skip


_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> Iterator[list[str]]:
    """/proc/<pid>/stat of every process as [pid, comm, state, ppid, pgrp, …] (comm may hold spaces)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                text = (entry / "stat").read_text()
                head, _, tail = text.rpartition(")")
                pid, _, comm = head.partition(" (")
                yield [pid, comm, *tail.split()]


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (compare two readings: ours vs everyone's)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / _TICKS


def cpu_by_command(*commands: str) -> dict[str, float]:
    """CPU seconds used so far by all processes named `commands` (e.g. postgres, redis-server)."""
    totals = dict.fromkeys(commands, 0.0)
    for fields in _proc_stats():
        if fields[1] in totals:
            totals[fields[1]] += (int(fields[13]) + int(fields[14])) / _TICKS
    return {name: round(value, 2) for name, value in totals.items()}


@contextlib.contextmanager
def cpu_hog(processes: int) -> Iterator[list[int]]:
    """`processes` busy loops beside the stack for the block (a machine busy with other work)."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield [hog.pid for hog in hogs]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(timeout=10)


def _plain_session(pool: int = 16) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback only: never through a proxy from the environment
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool)
    session.mount("http://", adapter)
    return session


def _answers(url: str) -> Callable[[], bool]:
    session = _plain_session(1)
    return lambda: session.get(url, timeout=1).status_code == 200


def _alive_for(stack: Stack, name: str, *, seconds: float) -> Callable[[], bool]:
    since: list[float] = []

    def ready() -> bool:
        since.append(time.monotonic()) if not since else None
        return stack.processes[name].alive and time.monotonic() - since[0] >= seconds

    return ready


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
