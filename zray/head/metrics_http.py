"""The head's metrics endpoint: HTTP ``GET /metrics`` in Prometheus' text format.

A thread serves HTTP; it never reads the head's tables.  Each request leaves a
slot in ``pending`` and waits; the head's loop, which owns the tables, fills
the slots on its next turn (within ``TICK_S``, 0.1 s) with ``render``'s text.
Bound to ``Config.metrics_export_host`` (127.0.0.1 by default).
"""

from __future__ import annotations

import logging
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("zray.head")

WAIT_S = 5.0


class MetricsEndpoint:
    def __init__(self, host: str, port: int):
        self.pending = queue.SimpleQueue()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?")[0] not in ("/", "/metrics"):
                    self.send_error(404, "only /metrics is served here")
                    return
                slot = [None, threading.Event()]
                endpoint.pending.put(slot)
                if not slot[1].wait(WAIT_S) or slot[0] is None:
                    self.send_error(503, "the head did not answer in time")
                    return
                body = slot[0].encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):
                log.debug("metrics: " + fmt, *args)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.address = self.server.server_address
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="zray-metrics")
        self.thread.start()
        log.info("metrics served on http://%s:%s/metrics", *self.address[:2])

    def answer(self, render) -> None:
        """Fill the waiting requests (called by the head's loop)."""
        text = None
        while True:
            try:
                slot = self.pending.get_nowait()
            except queue.Empty:
                return
            if text is None:
                try:
                    text = render()
                except Exception:
                    log.exception("could not render the metrics")
                    text = ""
            slot[0] = text
            slot[1].set()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
