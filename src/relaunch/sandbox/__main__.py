"""``python -m relaunch.sandbox api --port PORT [--dns-port PORT] [--token T] [--state-dir DIR] [--network NAME]``
and ``python -m relaunch.sandbox image`` (build the base image unless it is there).

Runs the sandbox cloud's API in the foreground with the real Docker backend until
SIGINT/SIGTERM, and the zones' authoritative DNS on 127.0.0.1 (``--dns-port``; -1 turns it
off). The token comes from ``--token``, else ``RELAUNCH_SANDBOX_TOKEN``, else
``sandbox``; it is never printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from relaunch.sandbox import state_dir
from relaunch.sandbox.api import DEFAULT_TOKEN, TOKEN_ENV, start_server
from relaunch.sandbox.docker_backend import NETWORK
from relaunch.sandbox.ratelimit import HOURLY_LIMIT, MINUTE_LIMIT

#: Seconds to let running actions finish on SIGTERM; a later start takes over the rest.
STOP_GRACE = 20.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relaunch.sandbox", description="The sandbox cloud.")
    sub = parser.add_subparsers(dest="command", required=True)
    api = sub.add_parser("api", help="serve the DigitalOcean API of the sandbox on 127.0.0.1")
    api.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    api.add_argument("--dns-port", type=int, default=0,
                     help="UDP and TCP port of the zones' DNS server (default: a free one; -1: none)")
    api.add_argument("--token", help=f"the API token to accept (default: ${TOKEN_ENV}, else '{DEFAULT_TOKEN}')")
    api.add_argument("--state-dir", type=Path, help="where the cloud's state lives (default: RELAUNCH_SANDBOX_DIR)")
    api.add_argument("--per-hour", type=int, default=HOURLY_LIMIT, help="rate limit per hour (default %(default)s)")
    api.add_argument("--per-minute", type=int, default=MINUTE_LIMIT, help="rate limit per minute (default %(default)s)")
    api.add_argument("--network", default=NETWORK, help="the sandbox's Docker network (default %(default)s)")
    api.add_argument("-v", "--verbose", action="store_true", help="log every request")
    sub.add_parser("image", help="build the sandbox base image unless one for the current recipe exists")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    logging.getLogger("docker").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    if args.command == "image":
        from relaunch.sandbox.image import ensure_image

        print(f"sandbox base image: {ensure_image()}", flush=True)
        return 0
    token = args.token or os.environ.get(TOKEN_ENV) or DEFAULT_TOKEN
    state = args.state_dir or state_dir()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)

    from relaunch.sandbox.docker_backend import DockerBackend  # needs Docker; only the CLI does

    backend = DockerBackend(network=args.network)
    print("preparing the sandbox backend (the first time builds the base image)...", flush=True)
    backend.prepare()
    handle = start_server(state, backend, token, args.port, per_hour=args.per_hour, per_minute=args.per_minute,
                          dns_port=None if args.dns_port < 0 else args.dns_port)
    print(f"listening on {handle.url}", flush=True)
    if handle.dns_port is not None:
        print(f"dns on 127.0.0.1:{handle.dns_port}", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("stopping", flush=True)
    handle.close(wait=STOP_GRACE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
