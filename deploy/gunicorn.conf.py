"""Gunicorn settings for the SyncRoot API, read from the environment (see .env.example).

`PORT` is deliberately not read: honcho (`make run`) hands every Procfile process its own
PORT (5000, 5100, ...), which would move the API off 127.0.0.1:8000.
"""

import os


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


# 127.0.0.1 on a workstation; the container image sets GUNICORN_BIND=0.0.0.0:8000.
bind = os.environ.get("GUNICORN_BIND", "").strip() or "127.0.0.1:8000"
workers = _int("GUNICORN_WORKERS", 3)
# More than one thread selects the gthread worker: a slow client or CRM call does not block a process.
threads = _int("GUNICORN_THREADS", 2)
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# Recycling workers bounds slow memory growth; jitter keeps them from restarting together.
max_requests = _int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 0)
# Access logs are off by default (the load balancer has them); "-" sends them to stdout.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "").strip() or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# The heartbeat file lives in memory when /dev/shm exists: an overlay or read-only root
# filesystem can stall workers into false timeouts.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Fail at start-up, not at the first request, when settings or imports are broken.
preload_app = os.environ.get("GUNICORN_PRELOAD", "true").strip().lower() in ("1", "true", "yes", "on")
# The runtime control socket (gunicornc) is not used; left on, it would sit in $HOME, which is
# read-only in the container and shared by every gunicorn of a workstation user.
control_socket_disable = True
