"""Asking a head about the cluster without joining it as a driver.

The CLI and ``cluster_utils`` use this: one DEALER, one QUERY, one QUERY_REPLY.
The head answers queries from any peer; nothing here registers a job.
"""

from __future__ import annotations

import os

import zmq

from zray import protocol
from zray.protocol import Msg


def query(endpoint: str, name: str, args=None, timeout_s: float = 5.0, config=None):
    """The value of query ``name`` (see zray.head.queries); raise
    ConnectionError when the head does not answer in time.  ``config`` says
    where the cluster's key is (default: the environment and this host's records)."""
    from zray._launch import with_cluster_key
    from zray.config import Config
    from zray.security import secure_client
    config = with_cluster_key(config or Config.from_env(), endpoint)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, b"Q" + os.urandom(8))
    try:
        secure_client(sock, endpoint, config)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise ConnectionError(f"cannot connect to {endpoint}: {exc}") from None
        sock.send_multipart(protocol.encode(Msg.QUERY, [(1, name, args)]))
        if not sock.poll(timeout_s * 1000):
            raise ConnectionError(f"no answer from a zray head at {endpoint} in "
                                  f"{timeout_s:g} s; is the address right and the head up?")
        message = protocol.decode(sock.recv_multipart())
    finally:
        sock.close()
    if message.type is Msg.PROTOCOL_ERROR:
        raise ConnectionError(message.items[0][0])
    _request_id, ok, value = message.items[0]
    if not ok:
        raise RuntimeError(value)
    return value
