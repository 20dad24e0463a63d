"""The deployment artefacts agree with each other and with the code.

Procfile, docker-compose.yml and the Helm chart start the same queue groups, the chart's templates
only read values that exist, .env.example documents every setting with its real default, and the
Dockerfile builds a lean, non-root image. No database needed, but for the autoscaling queries.
"""

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from honcho.environ import parse_procfile

from syncroot import queues

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "syncroot"
TEMPLATES = CHART / "templates"
WORKER_GROUPS = {"forwarder", "dlq", "webhooks"}
APP_SERVICES = {"migrate", "api", "forwarder", "dlq", "webhooks", "beat", "salesforce", "hubspot"}
ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")
SHELL_DEFAULT = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?-([^}]*))?\}")


# --- readers ---------------------------------------------------------------------------------


def _expand(command: str) -> list[str]:
    """A Procfile/compose command as argv, `${NAME:-default}` replaced by its default."""
    return shlex.split(SHELL_DEFAULT.sub(lambda m: m.group(2) or f"<{m.group(1)}>", command))


def _option(argv: list[str], *names: str) -> str:
    for index, arg in enumerate(argv):
        if arg in names:
            return argv[index + 1]
    raise AssertionError(f"{names[0]} missing from {argv}")


def _procfile(name: str) -> dict[str, list[str]]:
    processes = parse_procfile((ROOT / name).read_text()).processes
    return {process: _expand(command) for process, command in processes.items()}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def _env_example() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            assert match.group(1) not in found, f"{match.group(1)} is listed twice in .env.example"
            found[match.group(1)] = match.group(2).strip().strip('"')
    return found


def _settings_env_calls() -> dict[str, object]:
    """NAME -> literal default (or ... when the default is computed) of every env read in settings."""
    tree = ast.parse((ROOT / "syncroot" / "settings.py").read_text())
    calls: dict[str, object] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
            continue
        func = node.func
        is_env = (isinstance(func, ast.Name) and func.id == "env") or (
            isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "env"
        )
        if is_env and isinstance(node.args[0].value, str):
            default = next((kw.value for kw in node.keywords if kw.arg == "default"), None)
            try:
                calls[node.args[0].value] = ast.literal_eval(default) if default is not None else None
            except ValueError:
                calls[node.args[0].value] = ...
    return calls


def _as_env_text(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return "" if value is None else str(value)


def _celery_queue_groups(commands: dict[str, list[str]]) -> dict[str, set[str]]:
    groups = {}
    for name, argv in commands.items():
        if argv[:4] == ["celery", "-A", "syncroot", "worker"]:
            node = _option(argv, "-n", "--hostname")
            assert node == f"{name}@%h", f"{name}: node name {node!r} should be {name}@%h"
            groups[name] = set(_option(argv, "-Q", "--queues").split(","))
    return groups


# --- (1) one set of queues everywhere ---------------------------------------------------------


def test_procfile_compose_and_chart_start_the_same_queue_groups():
    from_procfile = _celery_queue_groups(_procfile("Procfile"))
    from_compose = _celery_queue_groups({name: svc.get("command", []) for name, svc in _compose()["services"].items()})
    from_chart = {name: set(worker["queues"]) for name, worker in _values()["workers"].items()}

    assert set(from_procfile) == WORKER_GROUPS
    assert from_compose == from_procfile
    assert from_chart == from_procfile
    consumed = [queue for group in from_procfile.values() for queue in group]
    assert sorted(consumed) == sorted(queues.ALL), "every queue is consumed by exactly one worker group"
    # The chart's worker template builds -Q from those values rather than spelling queues out.
    assert 'join "," $worker.queues' in (TEMPLATES / "workers.yaml").read_text()


def test_worker_concurrency_defaults_agree():
    procfile, compose = _procfile("Procfile"), _compose()["services"]
    for name, worker in _values()["workers"].items():
        expected = str(worker["concurrency"])
        assert _option(procfile[name], "--concurrency") == expected
        assert _option(_expand(shlex.join(compose[name]["command"])), "--concurrency") == expected


def test_every_routed_queue_has_a_consumer(settings):
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    assert routed | {settings.CELERY_TASK_DEFAULT_QUEUE} <= set(queues.ALL)


# --- (2) the chart reads only values that exist -------------------------------------------------

VALUES_PATH = re.compile(r"(?<![\w$.])\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
BLOCK_OPEN = re.compile(r"\{\{-?\s*(if|range|with|define|block)\b")
BLOCK_END = re.compile(r"\{\{-?\s*end\s*-?\}\}")


def _template_files() -> list[Path]:
    return sorted(path for path in TEMPLATES.iterdir() if path.is_file())


def test_every_values_path_used_by_a_template_exists():
    values, missing = _values(), []
    for path in _template_files():
        for match in VALUES_PATH.finditer(path.read_text()):
            node: object = values
            for key in match.group(1).strip(".").split("."):
                if not isinstance(node, dict) or key not in node:
                    missing.append(f"{path.name}: .Values{match.group(1)}")
                    break
                node = node[key]
    assert not missing, f"read by templates but not in values.yaml: {sorted(set(missing))}"


def _skeleton(text: str) -> str:
    """A template with lines that are only actions dropped and inline actions made a scalar."""
    text = re.sub(r"\{\{-? /\*.*?\*/ ?-?\}\}", "", text, flags=re.S)
    kept = [line for line in text.splitlines() if not re.fullmatch(r"\s*\{\{.*\}\}\s*", line)]
    return re.sub(r"\{\{.*?\}\}", "X", "\n".join(kept))


def test_chart_templates_are_balanced_and_their_skeleton_is_yaml():
    for path in _template_files():
        text = path.read_text()
        assert text.count("{{") == text.count("}}"), path.name
        assert len(BLOCK_OPEN.findall(text)) == len(BLOCK_END.findall(text)), f"{path.name}: unbalanced end"
        if path.suffix != ".yaml":
            continue
        # What stays once the actions are gone must be YAML with Kubernetes objects in it: this
        # catches indentation slips without helm.
        documents = [doc for doc in yaml.safe_load_all(_skeleton(text)) if doc]
        assert documents, path.name
        for doc in documents:
            assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{path.name}: {doc.get('kind')}"


def test_chart_runs_the_probes_hooks_and_singleton_beat_it_promises():
    api = (TEMPLATES / "api-deployment.yaml").read_text()
    assert "path: /healthz" in api
    assert "path: /readyz" in api
    beat = yaml.safe_load(_skeleton((TEMPLATES / "beat-deployment.yaml").read_text()))
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    job = (TEMPLATES / "migrate-job.yaml").read_text()
    assert "helm.sh/hook: pre-install,pre-upgrade" in job
    assert '"manage.py", "migrate"' in job
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "syncroot"


# --- (3) .env.example documents every setting, with its real default -------------------------


def test_env_example_lists_every_setting_with_its_default():
    documented, calls = _env_example(), _settings_env_calls()
    assert len(calls) > 40, "the settings parser found too few env reads"
    missing = sorted(set(calls) - set(documented))
    assert not missing, f"read in settings.py but not in .env.example: {missing}"
    wrong = {
        name: (documented[name], _as_env_text(default))
        for name, default in calls.items()
        if default is not ... and name != "DJANGO_STATIC_ROOT" and documented[name] != _as_env_text(default)
    }
    assert not wrong, f".env.example default differs from settings.py (shown, actual): {wrong}"


def test_env_example_lists_every_process_and_runner_variable():
    documented = set(_env_example())
    gunicorn = set(
        re.findall(
            r"""(?:environ\.get|_int)\(\s*["']([A-Z0-9_]+)""", (ROOT / "deploy" / "gunicorn.conf.py").read_text()
        )
    )
    procfiles = {
        m.group(1)
        for name in ("Procfile", "Procfile.sandboxes")
        for m in SHELL_DEFAULT.finditer((ROOT / name).read_text())
    }
    compose = {m.group(1) for m in SHELL_DEFAULT.finditer((ROOT / "docker-compose.yml").read_text())} - {"USER"}
    chart = set(_values()["env"]) | set(_values()["secretEnv"])
    sandboxes_env = {
        m.group(1)
        for line in (ROOT / "deploy" / "sandboxes.env").read_text().splitlines()
        if (m := ASSIGNMENT.match(line)) and not line.startswith("#")
    }
    for source, names in [
        ("gunicorn", gunicorn),
        ("Procfiles", procfiles),
        ("compose", compose),
        ("chart", chart),
        ("sandboxes.env", sandboxes_env),
    ]:
        assert names, source
        assert names <= documented, f"{source} reads undocumented variables: {sorted(names - documented)}"
    assert "SYNCROOT_SANDBOXES" in documented


def test_env_example_gives_every_variable_a_comment():
    lines = (ROOT / ".env.example").read_text().splitlines()
    for index, line in enumerate(lines):
        if not ASSIGNMENT.match(line):
            continue
        above = index - 1
        while ASSIGNMENT.match(lines[above]):  # a few related variables may share one comment
            above -= 1
        assert lines[above].startswith("# "), f"no comment above {line!r}"


# --- (4) the image ------------------------------------------------------------------------------


def test_dockerfile_builds_a_lean_non_root_image_with_a_health_check():
    text = (ROOT / "Dockerfile").read_text()
    instructions = [
        line.strip()
        for line in re.sub(r"\\\n", " ", text).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    froms = [line for line in instructions if line.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage build"
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", text).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
    runtime = instructions[instructions.index(froms[-1]) :]
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    pip_installs = re.findall(r"pip install[^&\n]*", text)
    assert pip_installs
    assert all("-r /tmp/requirements.txt" in cmd or "-r requirements.txt" in cmd for cmd in pip_installs)
    assert not [line for line in instructions if "requirements-dev" in line]
    healthcheck = next(line for line in runtime if line.startswith("HEALTHCHECK "))
    assert "/healthz" in healthcheck
    assert '"python"' in healthcheck
    assert "curl" not in healthcheck
    assert "collectstatic" in text
    assert runtime[-1] == 'CMD ["gunicorn", "syncroot.wsgi:application", "-c", "deploy/gunicorn.conf.py"]'


def test_dockerignore_keeps_secrets_out_and_the_runtime_in():
    patterns = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".venv", ".git", "var"} <= patterns
    for needed in (
        "manage.py",
        "requirements.txt",
        "deploy",
        "syncroot",
        "sandbox",
        "contacts",
        "providers",
        "webhooks",
    ):
        assert (ROOT / needed).exists(), needed
        assert needed not in patterns, f"{needed} is needed in the image"


# --- (5) compose ----------------------------------------------------------------------------


def test_compose_database_and_redis_start_alone_on_the_default_ports():
    services = _compose()["services"]
    db, redis = services["db"], services["redis"]
    assert db["image"] == "postgres:15"
    assert redis["image"] == "redis:7"
    assert db["ports"] == ["127.0.0.1:5432:5432"]
    assert redis["ports"] == ["127.0.0.1:6379:6379"]
    for service in (db, redis):
        assert "depends_on" not in service
        assert "profiles" not in service
        assert "healthcheck" in service
    # The app's DATABASE_URL names the role and database the db service creates (trust auth).
    url = services["api"]["environment"]["DATABASE_URL"]
    assert url == f"postgres://{db['environment']['POSTGRES_USER']}@db:5432/{db['environment']['POSTGRES_DB']}"
    assert db["environment"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"


def test_compose_commands_use_real_entry_points():
    from django.core.management import get_commands

    from sandbox.__main__ import build_parser

    services = _compose()["services"]
    assert set(services) == APP_SERVICES | {"db", "redis"}
    parser = build_parser()
    for name in APP_SERVICES:
        service, argv = services[name], _expand(shlex.join(services[name]["command"]))
        assert service["image"] == "syncroot:local"
        assert service["build"] == "."
        if argv[0] == "celery":
            assert argv[1:4] in (["-A", "syncroot", "worker"], ["-A", "syncroot", "beat"]), argv
        elif argv[0] == "gunicorn":
            assert argv[1] == "syncroot.wsgi:application"
            assert (ROOT / argv[3]).is_file()
        elif argv[:2] == ["python", "manage.py"]:
            assert argv[2] in get_commands(), argv
        else:
            assert argv[:3] == ["python", "-m", "sandbox"]
            assert service["profiles"] == ["sandboxes"]
            kind = argv[3]
            assert _option(argv, "--webhook-url").startswith(f"http://api:8000/webhooks/{kind}")
            assert _option(argv, "--port") == {"salesforce": "8101", "hubspot": "8102"}[kind]
            args = parser.parse_args(argv[3:])  # the sandbox CLI accepts every flag
            assert args.host == "0.0.0.0", "reachable from the other containers"
    for name in APP_SERVICES - {"migrate", "salesforce", "hubspot"}:
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert services[name]["depends_on"]["db"] == {"condition": "service_healthy"}


def test_compose_api_health_check_hits_healthz():
    api = _compose()["services"]["api"]
    assert "http://127.0.0.1:8000/healthz" in " ".join(api["healthcheck"]["test"])
    assert api["ports"] == ["8000:8000"]


def test_compose_sandbox_wiring_matches_the_sandboxes_env_file():
    services = _compose()["services"]
    wiring = dict(
        m.groups()
        for line in (ROOT / "deploy" / "sandboxes.env").read_text().splitlines()
        if not line.startswith("#") and (m := ASSIGNMENT.match(line))
    )
    salesforce_url = _option(services["salesforce"]["command"], "--webhook-url")
    assert salesforce_url == f"http://api:8000/webhooks/salesforce?token={wiring['SALESFORCE_WEBHOOK_TOKEN']}"
    assert wiring["SALESFORCE_LOGIN_URL"] == "http://salesforce:8101"
    assert wiring["HUBSPOT_BASE_URL"] == "http://hubspot:8102"
    allowed_hosts = _expand(services["api"]["environment"]["DJANGO_ALLOWED_HOSTS"])[0].split(",")
    assert {"api", "127.0.0.1"} <= set(allowed_hosts)


# --- Procfiles and gunicorn -------------------------------------------------------------------


def test_procfiles_run_installed_programs():
    from sandbox.__main__ import build_parser

    procfile = _procfile("Procfile")
    assert set(procfile) == {"web", *WORKER_GROUPS, "beat"}
    assert procfile["web"] == ["gunicorn", "syncroot.wsgi:application", "-c", "deploy/gunicorn.conf.py"]
    assert procfile["beat"][:4] == ["celery", "-A", "syncroot", "beat"]
    assert _option(procfile["beat"], "--schedule").startswith("var/")
    bin_dir = Path(sys.executable).parent
    for argv in procfile.values():
        assert (bin_dir / argv[0]).exists(), argv[0]
    parser, sandboxes = build_parser(), _procfile("Procfile.sandboxes")
    # The account of each CRM the environment connects, and a second one to connect from the admin.
    assert set(sandboxes) == {"salesforce", "hubspot", "salesforce2", "hubspot2"}
    for name, argv in sandboxes.items():
        kind = name.rstrip("2")
        assert argv[:4] == ["python", "-m", "sandbox", kind]
        args = parser.parse_args(argv[3:])
        assert args.port == {"salesforce": 8101, "hubspot": 8102, "salesforce2": 8103, "hubspot2": 8104}[name]
        assert args.webhook_url == f"<{(name if kind == 'salesforce' else kind).upper()}_SANDBOX_WEBHOOK_URL>"
        registered = args.callback_urls if kind == "salesforce" else args.redirect_uris
        assert registered == [{"salesforce": "<SALESFORCE_SANDBOX_CALLBACK_URL>",
                               "hubspot": "<HUBSPOT_SANDBOX_REDIRECT_URL>"}[kind]]  # fmt: skip
    assert _option(sandboxes["salesforce2"], "--organization-id") != "00D000000000001EAA"
    assert _option(sandboxes["hubspot2"], "--portal-id") != "62515"


def test_celery_finds_the_app_named_in_the_commands():
    from celery.app.utils import find_app

    assert find_app("syncroot").main == "syncroot"


def _gunicorn_config(env: dict[str, str]) -> dict:
    code = (
        "import json, runpy; c = runpy.run_path('deploy/gunicorn.conf.py');"
        "print(json.dumps({k: c[k] for k in ('bind', 'workers', 'threads', 'timeout', 'accesslog')}))"
    )
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("GUNICORN_", "PORT"))}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return yaml.safe_load(result.stdout)


def test_gunicorn_config_defaults_and_overrides():
    assert _gunicorn_config({}) == {
        "bind": "127.0.0.1:8000",
        "workers": 3,
        "threads": 2,
        "timeout": 30,
        "accesslog": None,
    }
    # honcho's PORT must not move the API.
    assert _gunicorn_config({"PORT": "5000"})["bind"] == "127.0.0.1:8000"
    custom = _gunicorn_config({"GUNICORN_BIND": "0.0.0.0:9000", "GUNICORN_WORKERS": "5", "GUNICORN_ACCESS_LOG": "-"})
    assert custom["bind"] == "0.0.0.0:9000"
    assert custom["workers"] == 5
    assert custom["accesslog"] == "-"


def test_gunicorn_accepts_the_config_and_loads_the_app():
    gunicorn = Path(sys.executable).parent / "gunicorn"
    result = subprocess.run(
        [str(gunicorn), "syncroot.wsgi:application", "-c", "deploy/gunicorn.conf.py", "--check-config"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


# --- (6) helm, when installed -----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("helm") is None, reason="helm is not installed; the chart was checked by parsing only")
def test_helm_lint_and_template():
    lint = subprocess.run(["helm", "lint", str(CHART)], capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rendered = subprocess.run(["helm", "template", "demo", str(CHART)], capture_output=True, text=True, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    documents = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    commands = {
        doc["metadata"]["name"].removeprefix("demo-syncroot-worker-"): doc["spec"]["template"]["spec"]["containers"][0][
            "command"
        ]
        for doc in documents
        if doc["kind"] == "Deployment" and "-worker-" in doc["metadata"]["name"]
    }
    assert _celery_queue_groups(commands) == _celery_queue_groups(_procfile("Procfile"))
    scaled = subprocess.run(["helm", "template", "demo", str(CHART), "--set", "autoscaling.enabled=true"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert scaled.returncode == 0, scaled.stderr
    objects = [doc for doc in yaml.safe_load_all(scaled.stdout) if doc]
    targets = {doc["spec"]["scaleTargetRef"]["name"] for doc in objects if doc["kind"] == "ScaledObject"}
    workers = {
        doc["metadata"]["name"]
        for doc in objects
        if doc["kind"] == "Deployment" and "-worker-" in doc["metadata"]["name"]
    }
    assert targets == workers
    assert not [doc for doc in objects if doc["metadata"]["name"] in workers and "replicas" in doc["spec"]]


# --- (7) queue-depth autoscaling (KEDA) ---------------------------------------------------------


def test_each_worker_group_scales_on_the_work_waiting_for_it():
    values = _values()
    scaled = (TEMPLATES / "worker-scaledobjects.yaml").read_text()
    workers = (TEMPLATES / "workers.yaml").read_text()
    for name, worker in values["workers"].items():
        scaling = worker["autoscaling"]
        assert 1 <= scaling["minReplicas"] <= scaling["maxReplicas"], name
        assert scaling["trigger"] in {"redis", "postgresql"}, name
        assert int(scaling["perReplica"]) > 0, name
    # One message per webhook delivery: the queues' depth is the work. The forwarder and dlq queues
    # hold one drain message per CRM at most: their work is rows in PostgreSQL.
    assert values["workers"]["webhooks"]["autoscaling"]["trigger"] == "redis"
    assert values["workers"]["forwarder"]["autoscaling"]["trigger"] == "postgresql"
    assert values["workers"]["dlq"]["autoscaling"]["trigger"] == "postgresql"
    # The ScaledObject targets the group's Deployment, and KEDA alone sets replicas when it is on.
    deployment_name = '{{ include "syncroot.fullname" $ }}-worker-{{ $name }}'
    assert f"  name: {deployment_name}" in workers
    assert f"scaleTargetRef:\n    name: {deployment_name}" in scaled
    assert "{{- if not $.Values.autoscaling.enabled }}\n  replicas: {{ $worker.replicas }}" in workers
    assert "{{- range $queue := $worker.queues }}" in scaled
    assert "listName: {{ $queue | quote }}" in scaled
    assert values["autoscaling"]["enabled"] is False  # KEDA is not assumed to be installed


@pytest.mark.django_db
def test_the_postgresql_scaling_queries_count_the_waiting_links():
    from django.db import connection
    from django.utils import timezone

    from contacts.tests.factories import ContactFactory
    from providers.models import LinkStatus, ProviderLink

    past = timezone.now() - timezone.timedelta(minutes=1)
    for status, next_attempt in [(LinkStatus.PENDING, None)] * 3 + [(LinkStatus.FAILED, past)] * 2 + [
        (LinkStatus.FAILED, timezone.now() + timezone.timedelta(hours=1)), (LinkStatus.SYNCED, None),
    ]:  # fmt: skip
        ProviderLink.objects.create(contact=ContactFactory(), provider="hubspot", status=status,
                                    next_attempt_at=next_attempt)  # fmt: skip
    counts = {}
    with connection.cursor() as cursor:
        for name in ("forwarder", "dlq"):
            cursor.execute(_values()["workers"][name]["autoscaling"]["query"])
            counts[name] = cursor.fetchone()[0]

    assert counts == {"forwarder": 3, "dlq": 2}
