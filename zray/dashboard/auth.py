"""Who may read the dashboard (no aiohttp here: the launcher uses it too).

- Bound to a loopback address (the default, 127.0.0.1): anyone on this host
  may read it, as they may read the head's ipc sockets' folder listing; a
  request whose ``Host`` header names something other than a loopback address
  or ``localhost`` is refused (403), so a web page elsewhere cannot reach it
  through DNS rebinding.
- Bound to any other address (``0.0.0.0``, a LAN address, a host name): every
  request must carry the dashboard token, as ``Authorization: Bearer TOKEN``
  or in the cookie that the login form sets; others get 401.  The rule
  follows the bound address, never the peer's: a request that arrives over
  loopback at a dashboard bound to every interface needs the token too
  (a proxy on the host would otherwise open it to everyone).

The token is an HMAC of the cluster's member secret key (``zray.security``),
so whoever holds the cluster key file can derive it (``zray dashboard-token``),
and it changes with the key.  A cluster without a key file (``zray.init()``'s
local cluster, or ``--insecure``) gets a random secret in its session folder
(``dashboard.secret``, mode 0600) instead.  The token is compared in constant
time and never logged or put in a URL.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets

TOKEN_LABEL = b"zray dashboard token v1"
SECRET_FILE = "dashboard.secret"
COOKIE = "zray_dashboard_token"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on loopback only."""
    host = (host or "").strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False          # a host name: it may resolve anywhere


def host_header_is_local(host_header: str | None) -> bool:
    """Whether a request's Host header names this host's loopback."""
    if not host_header:
        return True           # HTTP/1.0: no name to rebind
    host = host_header.strip()
    if host.startswith("["):
        host = host[1:host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.lower() == "localhost" or host.lower().endswith(".localhost") or \
        is_loopback(host)


def _derive(secret: bytes) -> str:
    return hmac.new(secret, TOKEN_LABEL, hashlib.sha256).hexdigest()[:40]


def _session_secret(session_dir: str) -> bytes:
    """The session's random secret, made (0600) the first time it is asked for."""
    path = os.path.join(session_dir, SECRET_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, "rb") as f:
            return f.read()
    secret = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


def dashboard_token(config, session_dir: str | None = None) -> str:
    """The token of the dashboard of the cluster whose key ``config`` names
    (or, keyless, of the session in ``session_dir``)."""
    if not config.insecure and config.cluster_key_file:
        from zmq.utils import z85
        from zray.security import load_key_file
        keys = load_key_file(config.cluster_key_file)
        return _derive(z85.decode(keys.member_secret))
    if not session_dir:
        raise ValueError("a cluster without a key file needs its session folder for the "
                         "dashboard's secret")
    return _derive(_session_secret(session_dir))


def token_matches(presented: str | None, token: str) -> bool:
    return bool(presented) and hmac.compare_digest(presented.encode(), token.encode())


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


__all__ = ["is_loopback", "host_header_is_local", "dashboard_token", "token_matches",
           "bearer", "COOKIE", "SECRET_FILE"]
