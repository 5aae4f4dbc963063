"""Who may talk to a cluster: ZeroMQ CURVE on every TCP socket, checked by ZAP.

A cluster has one key file, made by ``zray start --head`` (or by
``cluster_utils.Cluster``) with mode 0600.  It holds two CURVE key pairs: the
*server* pair, which every listening socket (head, chunk servers, actor workers,
driver result sockets) presents, and the *member* pair, which every connecting
socket presents.  A listening socket asks its process's ZAP handler about each
connection, and the handler admits only the member key: a peer without the key
file cannot finish the handshake, so nothing it sends is ever decoded, let alone
unpickled.  Traffic is encrypted once the handshake is done.

ipc sockets (the embedded cluster of ``zray.init()``, and a node's own workers)
are owner-only files in an owner-only directory and need no keys.
``Config.insecure`` (``--insecure``, ``ZRAY_INSECURE=1``) turns CURVE off.

Keys never appear in logs, command lines or error messages: processes are given
the key file's path, and read it themselves.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading

import zmq
from zmq.utils import z85

log = logging.getLogger("zray.security")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = "zray"
KEY_FILE_NAME = "cluster.key"


class KeyFileError(ValueError):
    """The key file is missing, malformed, or readable by others."""


class ClusterKeys:
    """The cluster's two CURVE key pairs (z85-encoded bytes).  Its repr hides them."""

    __slots__ = ("server_public", "server_secret", "member_public", "member_secret")

    def __init__(self, server_public, server_secret, member_public, member_secret):
        self.server_public = server_public
        self.server_secret = server_secret
        self.member_public = member_public
        self.member_secret = member_secret

    def __repr__(self):
        return "ClusterKeys(<hidden>)"

    @classmethod
    def generate(cls) -> "ClusterKeys":
        server_public, server_secret = zmq.curve_keypair()
        member_public, member_secret = zmq.curve_keypair()
        return cls(server_public, server_secret, member_public, member_secret)


def create_key_file(path: str) -> ClusterKeys:
    """Write fresh keys to ``path``, readable by its owner only."""
    keys = ClusterKeys.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({name: getattr(keys, name).decode() for name in ClusterKeys.__slots__}, f)
    return keys


def load_key_file(path: str) -> ClusterKeys:
    """Read a key file; refuse one that others can read or write."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise KeyFileError(f"no cluster key file at {path}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"the cluster key file {path} is readable or writable by other "
                           f"users (mode {stat.S_IMODE(mode):o}); run `chmod 600 {path}` "
                           "and try again")
    try:
        with open(path) as f:
            fields = json.load(f)
        values = [fields[name].encode() for name in ClusterKeys.__slots__]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise KeyFileError(f"{path} is not a zray cluster key file") from None
    if any(len(v) != 40 for v in values):
        raise KeyFileError(f"{path} is not a zray cluster key file")
    return ClusterKeys(*values)


_loaded: dict[str, ClusterKeys] = {}
_lock = threading.Lock()


def keys_for(config) -> ClusterKeys | None:
    """This process's keys: None when the cluster runs without CURVE."""
    if config.insecure:
        return None
    if not config.cluster_key_file:
        raise KeyFileError("this cluster needs its key file: pass --key FILE, set "
                           "ZRAY_CLUSTER_KEY_FILE, or run on the head's host")
    with _lock:
        keys = _loaded.get(config.cluster_key_file)
        if keys is None:
            keys = _loaded[config.cluster_key_file] = load_key_file(config.cluster_key_file)
        return keys


def _tcp_keys(endpoint: str, config):
    """The cluster's keys when ``endpoint`` is TCP and the cluster has keys."""
    return keys_for(config) if endpoint.startswith("tcp://") else None


TRANSFER_KEY_LABEL = b"zray transfer aes-gcm v1"


def transfer_seal_key(endpoint: str, config) -> bytes | None:
    """The key that seals chunks on ``endpoint`` with AES-256-GCM, or None where
    they travel as every other message does (CURVE on TCP, clear on ipc)."""
    if config.transfer_encryption != "aes-gcm":
        return None
    keys = _tcp_keys(endpoint, config)
    if keys is None:
        return None
    import hashlib    # here: OpenSSL's libcrypto is ~3.6 MB in every process that loads it
    import hmac
    return hmac.new(bytes(keys.server_secret), TRANSFER_KEY_LABEL, hashlib.sha256).digest()


def secure_server(sock, endpoint: str, config) -> None:
    """Before binding: a TCP listener presents the server key and admits members only."""
    keys = _tcp_keys(endpoint, config)
    if keys is None:
        return
    ZapHandler.ensure(sock.context, keys)
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.server_secret)


def secure_client(sock, endpoint: str, config) -> None:
    """Before connecting: a TCP connection presents the member key."""
    keys = _tcp_keys(endpoint, config)
    if keys is None:
        return
    sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.member_public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.member_secret)


class ZapHandler(threading.Thread):
    """Answers ZAP requests of one ZeroMQ context (RFC 27): CURVE connections
    presenting the member key are admitted; others are refused and logged with
    the peer's address."""

    _by_context: dict[int, "ZapHandler"] = {}
    _guard = threading.Lock()

    @classmethod
    def ensure(cls, context, keys: ClusterKeys) -> None:
        with cls._guard:
            if id(context) not in cls._by_context:
                handler = cls(context, keys)
                cls._by_context[id(context)] = handler
                handler.start()
                handler.bound.wait(5)

    def __init__(self, context, keys: ClusterKeys):
        super().__init__(name="zray-zap", daemon=True)
        self.context = context
        self.member_public = z85.decode(keys.member_public)
        self.bound = threading.Event()

    def run(self) -> None:
        sock = self.context.socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(ZAP_ENDPOINT)
        finally:
            self.bound.set()
        try:
            while True:
                request = sock.recv_multipart()
                sock.send_multipart(self._answer(request))
        except zmq.ContextTerminated:
            pass
        finally:
            sock.close()
            with self._guard:
                self._by_context.pop(id(self.context), None)

    def _answer(self, request: list) -> list:
        if len(request) < 6:
            return [b"1.0", b"", b"500", b"malformed ZAP request", b"", b""]
        version, request_id, domain, address, _identity, mechanism = request[:6]
        credentials = request[6:]
        if mechanism == b"CURVE" and credentials and credentials[0] == self.member_public:
            return [version, request_id, b"200", b"OK", b"member", b""]
        log.warning("refused a connection from %s: it does not hold this cluster's key "
                    "(mechanism %s)", address.decode(errors="replace") or "?",
                    mechanism.decode(errors="replace"))
        return [version, request_id, b"400", b"not a member of this cluster", b"", b""]


class HandshakeWatch:
    """Logs peers that fail the CURVE handshake on a listening socket, with their
    address.  A peer with no key or another cluster's key never reaches ZAP (the
    handshake fails first), so the socket's monitor events are the only trace:
    an accepted connection (whose address is read from its file descriptor)
    that closes after a failed handshake is logged as refused."""

    EVENTS = (zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
              | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
              | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    LOG_EVERY_S = 10.0
    FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
              | zmq.EVENT_HANDSHAKE_FAILED_AUTH)

    def __init__(self, sock):
        self.socket = sock.get_monitor_socket(self.EVENTS)
        self.peers: dict[int, str] = {}     # fd -> address, until its handshake ends
        self.failures = 0                   # failed handshakes not yet matched to a peer
        self.logged: dict[str, tuple] = {}  # host -> (last logged, refusals not logged)

    def drain(self) -> None:
        from zmq.utils.monitor import recv_monitor_message
        while self.socket.poll(0):
            try:
                event = recv_monitor_message(self.socket)
            except (zmq.ZMQError, ValueError):
                return
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_ACCEPTED:
                self.peers[value] = _peer_address(value)
            elif kind & self.FAILED:
                self.failures += 1
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED and len(self.peers) == 1:
                self.peers.clear()          # the one pending peer got in
            elif kind == zmq.EVENT_DISCONNECTED:
                address = self.peers.pop(value, None)
                if address is not None and self.failures:
                    self.failures -= 1
                    self._log(address)

    def _log(self, address: str) -> None:
        """At most one line per host every LOG_EVERY_S (refused peers retry often)."""
        import time
        host = address.rpartition(":")[0] or address
        now = time.monotonic()
        last, skipped = self.logged.get(host, (-self.LOG_EVERY_S, 0))
        if now - last < self.LOG_EVERY_S:
            self.logged[host] = (last, skipped + 1)
            return
        self.logged[host] = (now, 0)
        more = f" ({skipped} more refused since the last report)" if skipped else ""
        log.warning("refused a connection from %s: it failed the CURVE handshake (no key, "
                    "or another cluster's key)%s", address, more)

    def close(self) -> None:
        self.socket.close()


def _peer_address(fd: int) -> str:
    import socket
    try:
        with socket.socket(fileno=os.dup(fd)) as peer:
            host, port = peer.getpeername()[:2]
            return f"{host}:{port}"
    except OSError:
        return "an unknown address (it closed before it could be read)"
