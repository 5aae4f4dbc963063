"""This process's side of its node's object store: room, writes, pulls, restores.

A large object is written straight into the node's shared memory by the
process that makes it, but only once the node has made room for it within its
bound (RESERVE_SPACE, answered by SPACE_RESERVED; the node may spill older
objects first, make us wait, or refuse with ObjectStoreFullError), and the
node hears when the segment is complete (OBJECT_WRITTEN).  A segment that
lives on other nodes, or was spilled to disk here, is brought into this
node's memory on request (PULL_OBJECT, answered by OBJECT_PULLED).
"""

from __future__ import annotations

import concurrent.futures
import os
import time

from zray.client.routes import NODE
from zray.exceptions import ObjectLostError, ObjectStoreFullError, RaySystemError
from zray.protocol import Msg
from zray.serialization import segment_bytes, write_segment

FULL = "ObjectStoreFullError: "
#: Seconds a writer uses credit the node granted (the node keeps it 10 s).
CREDIT_CLIENT_S = 5.0


class LocalStore:
    def __init__(self, client):
        self.client = client
        self._pulls: dict[bytes, concurrent.futures.Future] = {}
        self._reservations: dict[bytes, concurrent.futures.Future] = {}
        self._credit = [0, 0.0]        # bytes the node granted ahead, usable until

    def write_object(self, object_id: bytes, obj, spares=()) -> int:
        """Write a segment into this node's store, within its bound: ask the node
        for room first (it may spill, or make us wait, or refuse with
        ObjectStoreFullError), then tell it the segment is complete."""
        client = self.client
        size = segment_bytes(obj)
        with client.lock:
            credit = self._credit
            covered = credit[0] >= size and time.monotonic() < credit[1]
            if covered:
                credit[0] -= size
        if not covered:
            granted = self.reserve_space(object_id, size)
            with client.lock:
                self._credit = [granted - size, time.monotonic() + CREDIT_CLIENT_S]
        path = client.segment_of(object_id)
        written = 0
        try:
            try:
                written = write_segment(path, obj, spares)
            except FileExistsError:
                # A retried task on a node where an earlier attempt wrote this
                # result (maybe only in part): write anew and swap it in.
                fresh = f"{path}.retry{os.getpid()}"
                written = write_segment(fresh, obj)
                os.rename(fresh, path)
        finally:
            if client.node_endpoint is not None:
                client.send(Msg.OBJECT_WRITTEN, (object_id, written), NODE)
        return written

    def reserve_space(self, object_id: bytes, size: int) -> int:
        """Wait until this node's store has room for ``size`` bytes; the bytes
        granted (credit for the next objects included)."""
        client = self.client
        if client.node_endpoint is None:
            return size   # a driver beside a node it cannot reach: nothing to ask
        future = concurrent.futures.Future()
        with client.lock:
            self._reservations[object_id] = future
        client.send(Msg.RESERVE_SPACE, (object_id, size), NODE)
        granted, error = self._wait(future)
        if error is not None:
            raise ObjectStoreFullError(error.removeprefix(FULL))
        return granted

    def _wait(self, future):
        """The node's answer; the client's fatal error if it fails meanwhile."""
        while True:
            try:
                return future.result(timeout=1.0)
            except concurrent.futures.TimeoutError:
                if self.client.fatal is not None:
                    raise self.client.fatal from None

    def read_local(self, object_id: bytes, size: int):
        """Map the object's segment here; one spilled to disk is restored first
        (by this node, on request: PULL_OBJECT)."""
        client = self.client
        path = client.segment_of(object_id)
        for attempt in range(5):
            try:
                return client.segment_maps.read(path)
            except FileNotFoundError:
                if attempt == 4:
                    raise
            self.pull(object_id, size, (client.local_node_id,))

    def pull(self, object_id: bytes, size: int, node_ids) -> None:
        """Have this process's node copy a segment that lives on other nodes
        into its store; wait until it is there."""
        client = self.client
        if client.local_node_id is None or client.node_endpoint is None:
            raise RaySystemError(
                f"object {object_id.hex()} lives on node(s) "
                f"{[n.hex()[:12] for n in node_ids]}, and this process has no node of its "
                "own to pull it to; run the driver on a host where a zray node runs")
        client.segment_maps.clear()       # maps kept only for reuse pin nothing
        with client.lock:
            future = self._pulls.get(object_id)
            first = future is None
            if first:
                future = self._pulls[object_id] = concurrent.futures.Future()
        if first:
            client.send(Msg.PULL_OBJECT, (object_id, size, tuple(node_ids)), NODE)
        error = self._wait(future)
        if error is not None and error.startswith(FULL):
            raise ObjectStoreFullError(error.removeprefix(FULL))
        if error is not None:
            raise ObjectLostError(object_id.hex(), error)
        with client.lock:
            client.state.add_local_copy(object_id, client.local_node_id)

    def on_space_reserved(self, items) -> None:
        client = self.client
        with client.lock:
            for object_id, size, error in items:
                future = self._reservations.pop(object_id, None)
                if future is not None:
                    future.set_result((size, error))

    def on_object_pulled(self, items) -> None:
        client = self.client
        with client.lock:
            for object_id, error in items:
                future = self._pulls.pop(object_id, None)
                if future is not None:
                    future.set_result(error)
