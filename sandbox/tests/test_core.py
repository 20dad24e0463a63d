"""The shared sandbox core: routing, limits, config, control plane, fault injection, dispatcher, CLI."""

import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from werkzeug.test import Client

from sandbox import create_app
from sandbox.__main__ import build_parser, options_from_args
from sandbox.core import (
    ConfigError,
    DailyQuota,
    RollingWindowLimiter,
    Router,
    SandboxApp,
    empty_response,
    json_response,
)
from sandbox.testing import ManualClock
from sandbox.webhooks import WebhookDispatcher

REPO = Path(__file__).resolve().parents[2]


class Demo(SandboxApp):
    KIND = "demo"

    def setup_routes(self) -> None:
        self.router.add("GET", "/things/{id}", lambda request, id: json_response({"id": id}))
        self.router.add("DELETE", "/things/{id}", lambda request, id: empty_response())
        self.router.add("POST", "/things", lambda request: json_response(self.json_body(request), 201))


def statuses(client: Client, count: int, path: str = "/things/1") -> list[int]:
    return [client.get(path).status_code for _ in range(count)]


# -- routing ---------------------------------------------------------------------


def test_router_matches_static_and_pattern_routes():
    router = Router()
    router.add("GET", "/c/search", "static")
    router.add("GET", "/c/{id}", "by-id")
    router.add("PATCH", "/c/{id}", "patch")

    static_route, _ = router.match("GET", "/c/search")
    pattern_route, params = router.match("PATCH", "/c/a@b.com")

    assert static_route.handler == "static"
    assert (pattern_route.handler, params, pattern_route.key) == ("patch", {"id": "a@b.com"}, "PATCH /c/{id}")
    assert router.match("DELETE", "/c/1") == ["GET", "PATCH"]  # 405 with the allowed methods
    assert router.match("GET", "/nope") == []  # 404
    assert router.match("PATCH", "/c/search")[0].handler == "patch"  # static path falls through


def test_unmatched_routes_use_the_provider_error_hook():
    client = Client(Demo())

    missing = client.get("/nowhere")
    wrong_method = client.put("/things/1")
    decoded = client.get("/things/a%40b.com")

    assert missing.status_code == 404
    assert missing.json["error"] == "NOT_FOUND"
    assert wrong_method.status_code == 405
    assert wrong_method.headers["Allow"] == "DELETE, GET"
    assert decoded.json == {"id": "a@b.com"}


def test_invalid_json_body_is_a_400_in_the_provider_shape():
    response = Client(Demo()).post("/things", data="{nope", content_type="application/json")

    assert response.status_code == 400
    assert response.json["error"] == "BAD_REQUEST"


# -- limits ----------------------------------------------------------------------


def test_rolling_window_limiter_refuses_then_recovers():
    clock = ManualClock()
    limiter = RollingWindowLimiter(3, 0.2, clock=clock)

    hits = [limiter.hit("token") for _ in range(4)]
    other = limiter.hit("other-token")
    clock.advance(0.19)
    still_refused = limiter.hit("token")
    clock.advance(0.01)
    recovered = limiter.hit("token")

    assert [hit.remaining for hit in hits[:3]] == [2, 1, 0]
    assert hits[3].allowed is False
    assert hits[3].retry_after_s == 1
    assert other.allowed is True  # the window is per key
    assert still_refused.allowed is False
    assert recovered.allowed is True


def test_disabled_limiter_and_daily_quota():
    unlimited = RollingWindowLimiter.from_config(None)
    quota = DailyQuota(2)

    assert all(unlimited.hit("t").allowed for _ in range(1000))
    assert [quota.hit("org").allowed for _ in range(3)] == [True, True, False]
    assert quota.used("org") == 2
    assert quota.hit("org").retry_after_s >= 1


# -- config and control plane ----------------------------------------------------


def test_config_changes_are_validated_all_or_nothing():
    app = Demo()

    with pytest.raises(ConfigError, match="unknown config keys: nope"):
        app.update_config({"nope": 1})
    with pytest.raises(ConfigError, match="error_rate"):
        app.update_config({"latency_ms": 5, "error_rate": 2})

    assert app.config["latency_ms"] == 0
    assert app.update_config({"rate_limit": {"max": 0}})["rate_limit"] is None
    with pytest.raises(ConfigError):
        Demo(nonsense=True)  # constructor options are config keys too


def test_control_plane_config_reset_and_stats():
    client = Client(Demo(latency_ms=0))

    refused = client.post("/_sandbox/config", json={"surprise": True})
    accepted = client.post("/_sandbox/config", json={"daily_quota": 10, "webhook_reorder": True})
    read_back = client.get("/_sandbox/config").json
    client.get("/things/1")
    client.get("/things/2")
    client.delete("/things/2")
    stats = client.get("/_sandbox/stats").json
    kept = client.post("/_sandbox/reset", json={}).json["config"]
    after_reset = client.get("/_sandbox/stats").json
    restored = client.post("/_sandbox/reset", json={"config": True}).json["config"]

    assert refused.status_code == 400
    assert "surprise" in refused.json["message"]
    assert accepted.json["daily_quota"] == 10
    assert read_back["webhook_reorder"] is True
    assert stats["requests_total"] == 3  # control-plane calls are not counted
    assert stats["requests"] == {"GET /things/{id}": {"200": 2}, "DELETE /things/{id}": {"204": 1}}
    assert set(stats["webhooks"]) >= {"sent", "acked", "failed"}
    assert kept["daily_quota"] == 10
    assert after_reset["requests_total"] == 0
    assert restored["daily_quota"] is None


# -- fault injection -------------------------------------------------------------


def test_error_rate_holds_within_tolerance_and_control_plane_is_spared():
    app = Demo(seed=11, error_rate=0.25)
    client = Client(app)

    codes = statuses(client, 400)
    control = [client.get("/_sandbox/config").status_code for _ in range(50)]

    failures = [code for code in codes if code >= 500]
    assert 0.18 <= len(failures) / 400 <= 0.32
    assert set(failures) == {500, 503}
    assert set(control) == {200}
    assert app.stats()["faults"]["errors"] == len(failures)


def test_rate_limit_storm_answers_429_with_retry_after():
    client = Client(Demo(seed=5, rate_limit_storm=0.3))

    responses = [client.get("/things/1") for _ in range(300)]

    limited = [response for response in responses if response.status_code == 429]
    assert 0.22 <= len(limited) / 300 <= 0.38
    assert {response.headers["Retry-After"] for response in limited} == {"1"}
    assert client.get("/_sandbox/stats").json["rate_limited"] == len(limited)


def test_seeded_faults_repeat_exactly():
    first = statuses(Client(Demo(seed=99, error_rate=0.3, rate_limit_storm=0.1)), 200)
    second = statuses(Client(Demo(seed=99, error_rate=0.3, rate_limit_storm=0.1)), 200)

    assert first == second
    assert len(set(first)) == 4  # 200, 429, 500 and 503 all occurred


def test_latency_is_added_to_api_calls_only():
    client = Client(Demo(latency_ms=100))

    def timed(path: str) -> float:
        started = time.perf_counter()
        client.get(path)
        return time.perf_counter() - started

    api = [timed("/things/1") for _ in range(10)]
    control = [timed("/_sandbox/config") for _ in range(10)]

    # Lower bounds only where the clock can only add (a busy machine makes every call slower):
    # each API call waits the latency; the control plane, much cheaper on average, does not.
    assert min(api) >= 0.099
    assert statistics.median(control) < 0.05


# -- webhook dispatcher ----------------------------------------------------------


class Recorder:
    """A ``send`` callable that records batches and fails the first ``failures`` calls."""

    def __init__(self, failures: int = 0, delay_s: float = 0.0) -> None:
        self.failures = failures
        self.delay_s = delay_s
        self.calls: list[tuple[list, int, float]] = []
        self.lock = threading.Lock()

    def __call__(self, events: list, attempt: int) -> bool:
        time.sleep(self.delay_s)
        with self.lock:
            self.calls.append((list(events), attempt, time.monotonic()))
            if self.failures:
                self.failures -= 1
                return False
            return True


def dispatcher_for(send, **config):
    app = Demo(seed=1, **config)
    return WebhookDispatcher(send, config=app.config, rng=app.rng, concurrency=4)


def test_dispatcher_coalesces_into_batches_and_delivers_quickly():
    send = Recorder()
    dispatcher = dispatcher_for(send)

    started = time.monotonic()
    dispatcher.enqueue([{"n": 0}])
    assert dispatcher.flush(2)
    single_latency = send.calls[0][2] - started
    dispatcher.enqueue([{"n": i} for i in range(250)])
    assert dispatcher.flush(2)
    dispatcher.stop()

    assert single_latency < 2.0  # ~10 ms linger, not held for a fuller batch; room for a busy box
    assert sorted(len(events) for events, _, _ in send.calls[1:]) == [50, 100, 100]
    assert dispatcher.stats()["events_delivered"] == 251


def test_dispatcher_retries_with_exponential_backoff_then_gives_up():
    send = Recorder(failures=10)
    dispatcher = dispatcher_for(send, webhook_retry_base_ms=20, webhook_max_retries=3)

    dispatcher.enqueue([{"n": 1}])
    assert dispatcher.flush(3)
    dispatcher.stop()

    assert [attempt for _, attempt, _ in send.calls] == [0, 1, 2, 3]
    gaps = [later[2] - earlier[2] for earlier, later in zip(send.calls, send.calls[1:], strict=False)]
    # Step k waits base * 2**k scaled by a 0.5–1.5 jitter.
    for step, gap in enumerate(gaps):
        assert 0.02 * 2**step * 0.5 <= gap <= 0.02 * 2**step * 1.5 + 0.1  # + scheduling slack
    stats = dispatcher.stats()
    assert (stats["sent"], stats["failed"], stats["gave_up"], stats["acked"]) == (4, 4, 1, 0)


def test_dispatcher_flush_times_out_and_clear_forgets_pending_work():
    send = Recorder(delay_s=0.3)
    dispatcher = dispatcher_for(send)

    dispatcher.enqueue([{"n": 1}])
    flushed = dispatcher.flush(0.05)
    dispatcher.clear()

    assert flushed is False
    assert dispatcher.stats()["pending"] == 0
    assert dispatcher.flush(0.01) is True
    dispatcher.stop()


# -- factory and CLI -------------------------------------------------------------


def test_create_app_by_name_and_unknown_kind():
    app = create_app("hubspot", seed=3, latency_ms=1)

    assert app.KIND == "hubspot"
    assert app.config["latency_ms"] == 1
    with pytest.raises(ValueError, match="unknown sandbox"):
        create_app("dynamics")


def test_cli_flags_become_app_options():
    args = build_parser().parse_args(
        ["hubspot", "--port", "0", "--seed", "4", "--webhook-url", "http://127.0.0.1:9/h", "--rate-limit", "off"]
    )

    options = options_from_args(args)

    assert args.port == 0
    assert options == {"seed": 4, "webhook_url": "http://127.0.0.1:9/h", "rate_limit": {"max": 0}}
    assert create_app("hubspot", **options).config["rate_limit"] is None


def test_python_m_sandbox_serves_until_terminated():
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "hubspot", "--port", "0", "--latency-ms", "1", "--token", "cli-token"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        url = line.rsplit(" ", 1)[-1].strip()
        config = requests.get(f"{url}/_sandbox/config", timeout=5).json()
        listed = requests.get(
            f"{url}/crm/v3/objects/contacts", headers={"Authorization": "Bearer cli-token"}, timeout=5
        )
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert line.startswith("hubspot sandbox listening on http://127.0.0.1:")
    assert config["latency_ms"] == 1
    assert listed.status_code == 200
    assert process.returncode == 0


# -- serving ---------------------------------------------------------------------


def test_server_keeps_connections_alive_and_skips_unread_bodies():
    import http.client

    from sandbox.server import serve

    with serve(Demo()) as running:
        connection = http.client.HTTPConnection("127.0.0.1", running.port, timeout=5)
        answers = []
        # The 404 and 405 leave their bodies unread; the next request must still parse.
        for method, path, body in [
            ("POST", "/nowhere", b'{"big": "' + b"x" * 5000 + b'"}'),
            ("PUT", "/things/1", b"ignored"),
            ("GET", "/things/7", None),
            ("POST", "/things", b'{"a": 1}'),
        ]:
            connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            answers.append((response.status, response.read(), response.getheader("Connection")))
            local_port = connection.sock.getsockname()[1]
            if method == "POST" and path == "/nowhere":
                first_port = local_port
        connection.close()

    assert [status for status, _, _ in answers] == [404, 405, 200, 201]
    assert answers[2][1] == b'{"id":"7"}'
    assert answers[3][1] == b'{"a":1}'
    assert local_port == first_port  # one TCP connection served all four
    assert {header for _, _, header in answers} == {None}


def test_stopping_a_sandbox_drops_its_keep_alive_connections():
    from sandbox.server import serve

    running = serve(Demo())
    session = requests.Session()
    assert session.get(f"{running.url}/things/1", timeout=5).status_code == 200

    running.stop()

    with pytest.raises(requests.ConnectionError):
        session.get(f"{running.url}/things/1", timeout=5)


# --- Record ids are never reused ------------------------------------------------------------------
def _hubspot_create(app, email: str) -> str:
    response = Client(app).post(
        "/crm/v3/objects/contacts",
        json={"properties": {"email": email}},
        headers={"Authorization": "Bearer sandbox-token"},
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["id"]


def test_hubspot_ids_start_at_a_random_point_per_run_unless_seeded():
    seeded = [_hubspot_create(create_app("hubspot", seed=3), "a@example.com") for _ in range(2)]
    unseeded = [_hubspot_create(create_app("hubspot"), "a@example.com") for _ in range(2)]

    assert seeded == ["1001", "1001"]  # repeatable
    assert all(value.isdigit() for value in unseeded)
    assert unseeded[0] != unseeded[1]  # a restarted sandbox does not hand out the same ids


def test_a_reset_keeps_counting_ids():
    app = create_app("hubspot", seed=3)
    first = _hubspot_create(app, "a@example.com")
    app.reset_records()

    assert int(_hubspot_create(app, "a@example.com")) > int(first)


@pytest.mark.parametrize(
    ("kind", "flag", "key"),
    [("hubspot", "--redirect-uri", "redirect_uris"), ("salesforce", "--callback-url", "callback_urls")],
)
def test_the_apps_redirect_urls_are_registered_from_the_command_line(kind, flag, key):
    urls = ["http://127.0.0.1:8000/a/callback/", "http://127.0.0.1:8000/b/callback/"]
    args = build_parser().parse_args([kind, flag, urls[0], flag, urls[1]])

    assert create_app(kind, **options_from_args(args)).config[key] == tuple(urls)
