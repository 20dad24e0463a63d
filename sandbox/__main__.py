"""``python -m sandbox {hubspot|salesforce} [--port N] [--seed N] [--webhook-url URL] …``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from sandbox import PROVIDERS, provider_module
from sandbox.server import serve

# Flags every provider understands; dest names are config/option names.
_SERVER_ONLY = ("kind", "host", "port", "log_level")


def _rate_limit(text: str) -> dict[str, int]:
    """``MAX/INTERVAL_MS`` (e.g. ``100/10000``) or ``off``."""
    if text.lower() == "off":
        return {"max": 0}
    maximum, _, interval = text.partition("/")
    try:
        return {"max": int(maximum), "interval_ms": int(interval or 10_000)}
    except ValueError:
        raise argparse.ArgumentTypeError("expected MAX/INTERVAL_MS or off") from None


def _common_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=default_port, help=f"port (default {default_port}; 0 = any)")
    parser.add_argument("--seed", type=int, default=None, help="seed the fault-injection RNG")
    parser.add_argument("--webhook-url", dest="webhook_url", default=None, help="where to deliver webhooks")
    parser.add_argument("--latency-ms", dest="latency_ms", type=float, default=None, help="added latency per API call")
    parser.add_argument(
        "--error-rate", dest="error_rate", type=float, default=None, help="fraction of API calls answered 500/503"
    )
    parser.add_argument(
        "--rate-limit-storm",
        dest="rate_limit_storm",
        type=float,
        default=None,
        help="fraction of API calls answered 429",
    )
    parser.add_argument(
        "--rate-limit", dest="rate_limit", type=_rate_limit, default=None, help="MAX/INTERVAL_MS per token, or off"
    )
    parser.add_argument(
        "--daily-quota", dest="daily_quota", type=int, default=None, help="API calls allowed per day (0 = unlimited)"
    )
    parser.add_argument("--token", default=None, help="static Bearer token accepted (default sandbox-token)")
    parser.add_argument("--client-id", dest="client_id", default=None, help="OAuth client id (default sandbox-client)")
    parser.add_argument(
        "--client-secret", dest="client_secret", default=None, help="OAuth client secret (default sandbox-secret)"
    )
    parser.add_argument("--log-level", dest="log_level", default="WARNING", help="Python log level (default WARNING)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="Local CRM API emulators.")
    subparsers = parser.add_subparsers(dest="kind", required=True, metavar="{" + "|".join(PROVIDERS) + "}")
    for kind in PROVIDERS:
        try:
            module = provider_module(kind)
        except ImportError:
            continue  # a provider whose module is not present is simply not offered
        sub = subparsers.add_parser(kind, help=(module.__doc__ or kind).strip().splitlines()[0])
        _common_arguments(sub, module.DEFAULT_PORT)
        module.add_arguments(sub)
    return parser


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Options for ``create_app``: every flag given (None means "keep the default")."""
    return {key: value for key, value in vars(args).items() if key not in _SERVER_ONLY and value is not None}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = provider_module(args.kind).create_app(**options_from_args(args))
    running = serve(app, host=args.host, port=args.port)
    print(f"{args.kind} sandbox listening on {running.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    running.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
