# syntax=docker/dockerfile:1
# SyncRoot image: one image for the API (default command), the Celery workers, beat and the
# migration job (override the command, see docker-compose.yml and charts/syncroot).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: resolve and install the pinned runtime dependencies into a virtualenv ------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# Runtime dependencies only: requirements-dev.txt (pytest, SDKs, linters) never enters the image.
RUN /opt/venv/bin/pip install --no-compile -r /tmp/requirements.txt

# --- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=syncroot.settings \
    GUNICORN_BIND=0.0.0.0:8000
# A fixed, unprivileged uid/gid so Kubernetes can enforce runAsNonRoot.
RUN groupadd --system --gid 10001 syncroot \
    && useradd --system --uid 10001 --gid syncroot --no-create-home --home-dir /app --shell /usr/sbin/nologin syncroot
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY . /app
# Byte-compile once at build time (the running user cannot write here), collect the admin's and
# the API docs' static files, and leave var/ writable for the beat schedule.
RUN python -m compileall -q /app /opt/venv \
    && python manage.py collectstatic --no-input -v0 \
    && mkdir -p /app/var \
    && chown -R syncroot:syncroot /app/var
USER 10001:10001
EXPOSE 8000
# python, not curl: the slim image has no curl. Liveness only (/healthz); readiness (/readyz,
# database and Redis) is for the orchestrator to route traffic.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('GUNICORN_BIND', '0.0.0.0:8000').rsplit(':', 1)[-1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).read()"]
CMD ["gunicorn", "syncroot.wsgi:application", "-c", "deploy/gunicorn.conf.py"]
