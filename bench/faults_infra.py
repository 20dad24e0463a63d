"""Private PostgreSQL and Redis servers for the fault suite, which stops and restarts them.

The machine's shared servers (PostgreSQL on 5432, Redis on 6379) serve other people's tests and
must never be stopped, so the suite runs its stack on a redis-server and a PostgreSQL cluster of
its own, on free ports, with their files in a temporary directory removed at the end.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg2
import redis

from bench.stack import LOG_DIR, free_port

# Logs, lock and diagnostics of the suite's stack: apart from the benchmarks' (var/bench), so a
# fault run neither waits for a benchmark nor mixes its logs with one (their servers differ too).
FAULTS_DIR = LOG_DIR / "faults"
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _wait(check, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout}s")
        time.sleep(0.1)


class PrivateRedis:
    """`redis-server` on a free port, in memory only; `stop()` and `start()` it at will.

    A restart comes back EMPTY (no RDB, no AOF): everything queued in it is lost, as when a
    Redis without persistence restarts in production.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = open(FAULTS_DIR / "redis.log", "ab")

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a frozen server thaws; a running one ignores it
            return
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        _wait(self.ping, timeout=10, what="redis-server")

    def ping(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=15)

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel and then hang, as with a stuck server."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def close(self) -> None:
        self.stop()
        self.log.close()


class PrivatePostgres:
    """A throwaway PostgreSQL cluster (initdb, trust auth on loopback) on a free port.

    PostgreSQL refuses to run as root: when the bench runs as root the cluster belongs to the
    `postgres` system user, and its superuser role is still named after the login (libpq's
    default user), exactly like the shared server's.
    """

    def __init__(self) -> None:
        if not PG_BIN_DIRS:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = PG_BIN_DIRS[0]
        self.port = free_port()
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None  # memory: fast, gone at reboot
        self.dir = Path(tempfile.mkdtemp(prefix="syncroot-faults-pg-", dir=base))
        self.data = self.dir / "data"
        self.logfile = FAULTS_DIR / "postgres.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, user="postgres")
            with contextlib.suppress(FileNotFoundError):
                self.logfile.unlink()
            self.logfile.touch()
            shutil.chown(self.logfile, user="postgres")
        self._run("initdb", "-D", str(self.data), "-U", getpass.getuser(), "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C.UTF-8")  # fmt: skip
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.dir}'",
            "max_connections": "200",
            # Only a machine crash could lose data with fsync off, and the suite only kills processes.
            # synchronous_commit stays on: an acknowledged commit must survive `-m immediate`.
            "fsync": "off",
            "full_page_writes": "off",
            "shared_buffers": "64MB",
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    def _run(self, program: str, *args: str, timeout: float = 120) -> None:
        done = subprocess.run(
            [*self._as, str(self.bin / program), *args], capture_output=True, text=True, timeout=timeout
        )
        if done.returncode:
            raise RuntimeError(f"{program} {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> None:
        with contextlib.suppress(Exception):
            if self.ready():
                return
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "60", "start")
        _wait(self.ready, timeout=30, what="PostgreSQL")

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash (recovery from the WAL at the next start); `fast` a clean stop."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def ready(self) -> bool:
        connection = psycopg2.connect(dbname="postgres", host="127.0.0.1", port=self.port, connect_timeout=1)
        connection.close()
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def private_servers():
    """(PrivatePostgres or None, PrivateRedis), started, for the block; torn down and deleted after.

    None when no PostgreSQL server binaries are installed: the suite then runs on the shared
    server and cannot restart it (the postgres_restart scenario fails, saying why).
    """
    FAULTS_DIR.mkdir(parents=True, exist_ok=True)
    redis_server = PrivateRedis()
    postgres = None
    try:
        redis_server.start()
        try:
            postgres = PrivatePostgres()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"[faults] no private PostgreSQL ({exc}); using the shared server", file=sys.stderr)
        if postgres is not None:
            postgres.start()
        yield postgres, redis_server
    finally:
        if postgres is not None:
            postgres.close()
        redis_server.close()
