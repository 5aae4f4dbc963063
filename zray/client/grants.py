"""A worker the head leased to this driver (LEASE_GRANT): part of ``ClientState``.

With a grant and nothing of ours running on it, a plain task goes straight to
that worker (``Grant`` route, through our results ROUTER) and the head is told
with SUBMIT_LEASED; a second task while it runs means a burst, so the grant
goes back (LEASE_RETURN) and nodes share the work out.  The head may recall it
(LEASE_RECALL); an idle one goes back by itself.  A LEASE_RETURN is never
queued between a granted task and its SUBMIT_LEASED: both are queued in one
call under the client's lock.
"""

from __future__ import annotations

from collections import deque

from zray.client.routes import HEAD, Grant
from zray.ids import object_id_for_return
from zray.protocol import Msg
from zray.resources import leasable

#: Seconds after which a grant still busy with a task whose result this driver
#: dropped goes back to the head (the head tells holders only).
ORPHAN_GRANT_S = 1.0


class Lease:
    """The granted worker."""

    __slots__ = ("worker_id", "identity", "busy", "last_used", "known_functions")

    def __init__(self, worker_id: bytes, now: float):
        self.worker_id = worker_id
        self.identity = b"W" + worker_id    # the worker's identity on our results socket
        self.busy = None                    # the id of our task running there
        self.last_used = now
        self.known_functions: set = set()


def grantable(spec) -> bool:
    """A task a granted worker may run: what the head itself sends to leases, with
    nothing to resolve first and one return to tell us it finished."""
    return leasable(spec) and not spec.dep_ids and not spec.nested_ids \
        and spec.num_returns == 1 and bool(spec.owner_address)


class Grants:
    def __init__(self, client):
        self.client = client               # the ClientState this is part of
        self.lease: Lease | None = None
        self.failed: set = set()           # task ids that could not reach the worker
        # granted tasks the head may not know finished yet (REPORT_NOW); a
        # worker holds a report back 2 ms at most, so the last few suffice
        self.unreported: deque = deque(maxlen=64)

    def try_submit(self, spec, now: float) -> bool:
        """Send ``spec`` to the granted worker if it may go there (True)."""
        lease = self.lease
        if lease is None or not grantable(spec):
            return False
        if lease.busy is not None:
            self.drop()                     # a burst: give it back
            return False
        lease.busy = spec.task_id
        lease.last_used = now
        send = spec
        if spec.function_id not in lease.known_functions:
            lease.known_functions.add(spec.function_id)
            send = spec.copy()
            send.function_blob = self.client.function_blobs.get(spec.function_id)
        self.client.send(Grant(lease.identity, spec.task_id), Msg.EXECUTE_TASKS, (send,))
        self.unreported.append(spec.task_id)
        self.client.send(HEAD, Msg.SUBMIT_LEASED, (spec, lease.worker_id))
        return True

    def granted(self, items, now: float) -> None:
        """LEASE_GRANT: one at a time is enough; others go back at once."""
        client = self.client
        for worker_id, task_id in items:
            if self.lease is None and client.owner_address:
                lease = self.lease = Lease(worker_id, now)
                # The task the head ran there may still be running: the worker
                # is ours once its result is here (or gone from us).
                result = object_id_for_return(task_id, 1)
                if result in client.refs and result not in client.objects:
                    lease.busy = task_id
                continue
            client.send(HEAD, Msg.LEASE_RETURN, (worker_id,))

    def recalled(self, items) -> None:
        for (worker_id,) in items:
            if self.lease is not None and self.lease.worker_id == worker_id:
                self.drop()

    def return_idle(self, now: float, idle_s: float) -> None:
        lease = self.lease
        if lease is None or now - lease.last_used < idle_s:
            return
        if lease.busy is not None and (
                object_id_for_return(lease.busy, 1) in self.client.refs
                or now - lease.last_used < ORPHAN_GRANT_S):
            return
        # Idle, or busy with a task whose result we dropped and may never be
        # told of (the head tells holders only): the head takes it back.
        self.drop()

    def unreachable(self, task_id: bytes) -> None:
        """The granted worker is not connected (gone, or not yet): the task goes
        to the head instead (see ``to_head``), and the grant back."""
        self.failed.add(task_id)
        if self.lease is not None:
            self.drop()

    def drop(self) -> None:
        lease, self.lease = self.lease, None
        self.client.send(HEAD, Msg.LEASE_RETURN, (lease.worker_id,))

    def task_returned(self, task_id: bytes, now) -> None:
        lease = self.lease
        if lease is not None and lease.busy == task_id:
            lease.busy = None               # our granted worker is free again
            if now is not None:
                lease.last_used = now

    def to_head(self, msg_type, item):
        """A SUBMIT_LEASED whose task never reached the worker becomes SUBMIT_TASKS."""
        if msg_type is Msg.SUBMIT_LEASED and item[0].task_id in self.failed:
            self.failed.discard(item[0].task_id)
            return Msg.SUBMIT_TASKS, (item[0],)
        return msg_type, item

    def take_report_request(self):
        """A message the head acts on now may wait on our granted tasks, whose
        worker holds its reports as bookkeeping: ``(route, items)`` of a
        REPORT_NOW asking for them at once, or None."""
        if not self.unreported:
            return None
        ids = list(self.unreported)
        self.unreported.clear()
        if self.lease is None:
            return None
        return Grant(self.lease.identity, None), [(task_id,) for task_id in ids]

    def validate(self) -> None:
        lease = self.lease
        assert lease is None or self.client.owner_address, "a grant with no results socket"
