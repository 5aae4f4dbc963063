"""An actor worker's record of the method calls it ran, for the head's task events.

Actor calls go from caller to actor without the head, so the head would not
know that most of them ran, nor for how long.  With ``Config.actor_task_events``
the actor notes each finished call here (a lock and a tuple: about a
microsecond) and a thread sends what was noted at most every ``FLUSH_S`` as one
``actor_calls_ran`` query that wants no reply (``zray.head.queries``); the head
turns each into a row of its task-event history, so actor calls appear in
``list_tasks``, the timeline and the dashboard like tasks.

Times are this worker's wall clock (the call's end, and its run time), not
the head's: a call reported up to ``FLUSH_S`` late still gets its true place.
"""

from __future__ import annotations

import os
import threading
import time

from zray.protocol import Msg, STATUS_OK
from zray.serialization import KIND_ERROR

FLUSH_S = 0.05
NO_REPLY = -1


class CallEvents:
    def __init__(self, client, node_id: bytes, flush_s: float = FLUSH_S):
        self.client = client
        self.node_id = node_id
        self.pid = os.getpid()
        self.flush_s = flush_s
        self.noted: list = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._send_forever, daemon=True,
                                       name="zray-call-events")
        self.thread.start()

    def note(self, spec, status: int, results, run_s: float) -> None:
        """A call ended now after ``run_s`` seconds (its error blob if it failed)."""
        error = None
        if status != STATUS_OK:
            error = next((data for _oid, kind, data, _size, _c in results
                          if kind == KIND_ERROR), None)
        item = (spec.task_id, spec.attempt, spec.name, spec.job_id, spec.actor_id,
                time.time(), run_s, status == STATUS_OK, error)
        with self.cond:
            self.noted.append(item)
            if len(self.noted) == 1:
                self.cond.notify()

    def flush(self) -> None:
        with self.cond:
            noted, self.noted = self.noted, []
        if noted:
            self.client.send(Msg.QUERY, (NO_REPLY, "actor_calls_ran", {
                "node_id": self.node_id, "pid": self.pid, "calls": noted}))

    def _send_forever(self) -> None:
        while True:
            with self.cond:
                while not self.noted:
                    self.cond.wait()
            time.sleep(self.flush_s)          # let a burst of calls gather
            self.flush()


__all__ = ["CallEvents", "FLUSH_S"]
