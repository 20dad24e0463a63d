"""bin/respawn: `make run` restarts a worker that dies on its own, and stops it when asked."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESPAWN = str(REPO / "bin" / "respawn")

FAILS_ONCE = """
import pathlib, sys
marker = pathlib.Path(sys.argv[1])
runs = int(marker.read_text()) if marker.exists() else 0
marker.write_text(str(runs + 1))
sys.exit(3 if runs == 0 else 0)
"""


def test_a_command_that_dies_is_started_again_until_it_ends_cleanly(tmp_path):
    marker = tmp_path / "runs"

    done = subprocess.run(
        [RESPAWN, sys.executable, "-c", FAILS_ONCE, str(marker)], capture_output=True, text=True, timeout=30
    )

    assert done.returncode == 0
    assert marker.read_text() == "2"
    assert "exited with status 3; starting it again in 1 s" in done.stderr


def test_a_stop_signal_reaches_the_command_and_nothing_restarts(tmp_path):
    marker = tmp_path / "started"
    script = f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"
    process = subprocess.Popen([RESPAWN, sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not marker.exists():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    marker.unlink()

    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=10) == 128 + signal.SIGTERM
    # respawn says so before it restarts anything (and waits 1 s first); it has exited, so its
    # whole stderr is here: no need to wait and watch for the marker.
    assert "starting it again" not in process.stderr.read()
    assert not marker.exists()


def test_make_run_wraps_every_celery_process_of_the_procfile():
    celery = {
        name
        for name, command in (line.split(":", 1) for line in (REPO / "Procfile").read_text().splitlines() if line)
        if command.strip().startswith("celery ")
    }
    wrapped = re.search(r"\^\(([a-z|]+)\): #", (REPO / "bin" / "run").read_text())

    assert wrapped, "bin/run no longer wraps the workers with bin/respawn"
    assert set(wrapped.group(1).split("|")) == celery == {"forwarder", "dlq", "webhooks", "beat"}
