"""The client of drivers and workers: the same shape as head/ and node/.

- ``state.py`` ``ClientState``: references, objects and their waiters,
  subscriptions; with ``actor_calls.py`` (calls we own, their ordering and
  what the head must hear), ``grants.py`` (a leased worker) and ``streams.py``
  (generator tasks).  No sockets, threads or clock: events in, messages out.
- ``io.py`` ``ClientIO``: the I/O thread that owns the sockets, feeds the state
  and carries out its commands.
- ``facade.py`` ``Client``: the blocking calls (submit, get, wait, put, query).
- ``routes.py``: where an outgoing message goes (HEAD, NODE, Actor, Grant, ...).
"""

from zray.client.facade import Client
from zray.client.io import open_router
from zray.client.routes import HEAD, NODE, Head, Owner, Reply

__all__ = ["Client", "HEAD", "NODE", "Head", "Owner", "Reply", "open_router"]
