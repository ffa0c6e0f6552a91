"""``python -m kickouts.sandbox``: run the EnergyCAP sandbox until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import os
import sys

from . import API_KEY_VARIABLE
from .server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kickouts.sandbox",
        description="A local stand-in for the EnergyCAP REST API (a sandbox, not EnergyCAP).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback)")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_VARIABLE, "sandbox-key"),
        help=f"the ECI-ApiKey to accept (default: ${API_KEY_VARIABLE} or sandbox-key)",
    )
    parser.add_argument(
        "--task-seconds",
        type=float,
        default=20.0,
        help="how long a kickout re-import task runs before it ends",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds every API answer is delayed, as if EnergyCAP were far away (e.g. 0.2)",
    )
    parser.add_argument("--verbose", action="store_true", help="print each request to stderr")
    parser.add_argument(
        "--parent-pid", type=int, default=None, help="exit when this process is gone"
    )
    args = parser.parse_args(argv)
    if args.task_seconds < 0:
        parser.error("--task-seconds must not be negative")
    if args.latency < 0:
        parser.error("--latency must not be negative")
    serve(
        args.host,
        args.port,
        args.api_key,
        args.task_seconds,
        args.seed,
        latency=args.latency,
        verbose=args.verbose,
        parent_pid=args.parent_pid,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
