"""The dashboard process: ``python -m zray.dashboard --head ENDPOINT ...``.

Started by ``zray.dashboard.launch``; binds ``--host``/``--port`` (trying the
next ``--port-retries`` ports when that one is taken), writes ``--ready-file``
(JSON: host, port, url, pid) once it listens, and exits on SIGTERM or when the
head's process (``--head-pid``, on this host) is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import signal
import socket
import sys

log = logging.getLogger("zray.dashboard")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m zray.dashboard")
    parser.add_argument("--head", required=True, help="the head's endpoint")
    parser.add_argument("--config", required=True, help="the cluster's Config as JSON")
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8265)
    parser.add_argument("--port-retries", type=int, default=0)
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--head-pid", type=int, default=None)
    return parser.parse_args(argv)


def bind(host: str, port: int, retries: int) -> socket.socket:
    """A listening socket on ``host``: ``port``, else the next free one of ``retries``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    last = None
    for candidate in range(port, port + retries + 1) if port else [0]:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno != errno.EADDRINUSE:
                break
            continue
        sock.listen(128)
        sock.setblocking(False)
        return sock
    raise SystemExit(f"zray dashboard: cannot listen on {host}:{port}"
                     f"{f' (nor the next {retries} ports)' if retries else ''}: {last}")


async def _watch_head(pid: int, stop: asyncio.Event) -> None:
    import psutil
    try:
        head = psutil.Process(pid)
    except psutil.NoSuchProcess:
        stop.set()
        return
    while head.is_running() and head.status() != psutil.STATUS_ZOMBIE:
        await asyncio.sleep(1.0)
    log.info("the head (pid %d) is gone; the dashboard stops", pid)
    stop.set()


async def serve(args, config, sock) -> None:
    from aiohttp import web
    from zray.dashboard.auth import dashboard_token
    from zray.dashboard.server import make_app
    token = dashboard_token(config, args.session_dir)
    app = make_app(args.head, config, args.host, token)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    ready = {"host": host, "port": port, "pid": os.getpid(),
             "url": f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"}
    with open(args.ready_file + ".tmp", "w") as f:
        json.dump(ready, f)
    os.replace(args.ready_file + ".tmp", args.ready_file)
    log.info("dashboard serving %s (bound to %s)", ready["url"], host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.head_pid:
        loop.create_task(_watch_head(args.head_pid, stop))
    await stop.wait()
    await runner.cleanup()


def _use_cluster_key(config) -> None:
    """The state API resolves the cluster's key from the environment, as the CLI does."""
    if config.cluster_key_file:
        os.environ["ZRAY_CLUSTER_KEY_FILE"] = config.cluster_key_file
    os.environ["ZRAY_INSECURE"] = "1" if config.insecure else "0"
    os.environ["ZRAY_TEMP_DIR"] = config.temp_dir


def main(argv=None) -> int:
    from zray.config import Config
    args = parse_args(argv)
    config = Config.from_json(args.config)
    logging.basicConfig(level=getattr(logging, config.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s dashboard: %(message)s")
    _use_cluster_key(config)
    sock = bind(args.host, args.port, args.port_retries)
    asyncio.run(serve(args, config, sock))
    # a read of the head may still wait in a pool thread (up to its timeout):
    # nothing is left to say, so exit without joining it
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
