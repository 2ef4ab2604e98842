"""``python -m serving``: run the HTTP API and the web page with uvicorn (one worker)."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence

from config import ConfigError, load_config

logger = logging.getLogger("serving")


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {raw!r} is not an integer") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is outside 0..65535")
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{raw!r} must be >= 0")
    return value


def _count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an integer") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{value} is outside 1..1000")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve the recommendations the Flink job writes to Redis: a JSON API, a live web page at /, "
                    "Swagger UI at /docs, health at /healthz and Prometheus metrics at /metrics. "
                    "POST /events sends events to the events topic (kafka.topics.events).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  python -m serving                                     http://127.0.0.1:8000/ (open it in a browser)
  python -m serving --host 0.0.0.0 --port 8080          listen on every interface
  python -m serving --set redis.prefix=demo: --set kafka.topics.events=demo-events
  python -m serving --config my.yaml --max-age 60       /healthz fails when the newest result is > 60 s old
  curl -s 'http://127.0.0.1:8000/users/196/recommendations?n=5'
  curl -s -X POST localhost:8000/sessions/recommendations -d '{"items": [{"item_id": "50"}]}'
""")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--config", metavar="FILE", help="YAML file merged over config/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set redis.port=6380 (repeatable)")
    parser.add_argument("--max-age", type=_seconds, default=600.0, metavar="SECONDS",
                        help="/healthz answers 503 when the newest recommendation is older (default 600; 0: never)")
    parser.add_argument("--no-script", action="store_true",
                        help="read Redis with GET + pipelined HGETALL instead of the one-round-trip Lua script")
    parser.add_argument("--session-max-items", type=_count, default=None, metavar="N",
                        help="most events one POST /sessions/recommendations may hold (default 50)")
    parser.add_argument("--access-log", action="store_true", help="log every request (off by default: it is slow)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="log level (default info)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=args.log_level.upper())
    logging.getLogger("kafka").setLevel(logging.CRITICAL if args.log_level != "debug" else logging.DEBUG)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    import uvicorn

    from serving.api import create_app

    extra = {} if args.session_max_items is None else {"session_max_items": args.session_max_items}
    app = create_app(cfg, max_age_s=args.max_age, use_script=not args.no_script, **extra)
    gc.freeze()  # the objects made so far live for the whole run: keep them out of the collector's scans
    logger.info("serving on http://%s:%d/ (Redis %s:%s prefix %r, Kafka %s)", args.host, args.port,
                cfg["redis"]["host"], cfg["redis"]["port"], cfg["redis"]["prefix"], cfg["kafka"]["bootstrap"])
    try:
        uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level=args.log_level,
                    access_log=args.access_log, log_config=None)
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
