"""Worker: reports that may wait.  A driver granted this worker gets the inline
results of its tasks straight from us, so their TASKS_FINISHED for the head is
bookkeeping (it may wait ``bookkeeping_delay_s`` and leave in a batch) until
the head says a driver waits on them through it (REPORT_NOW)."""

from __future__ import annotations

from zray.protocol import Msg


class LazyReports:
    def __init__(self):
        self.client = None
        self.lazy: set = set()      # granted tasks whose TASKS_FINISHED may wait

    def attach(self, client) -> None:
        self.client = client
        client.message_handlers[Msg.REPORT_NOW] = self.on_report_now

    def hold(self, task_ids) -> None:
        self.lazy.update(task_ids)

    def urgent(self, task_id: bytes) -> None:
        """The head must hear of this one at once (it pushes the results)."""
        self.lazy.discard(task_id)

    def is_bookkeeping(self, msg_type, item) -> bool:
        """The client's hook: a held report is bookkeeping, once."""
        if msg_type is Msg.TASKS_FINISHED and item[0] in self.lazy:
            self.lazy.discard(item[0])     # its driver already has the results
            return True
        return False

    def on_report_now(self, items) -> None:
        """A driver waits, through the head, on these granted tasks."""
        for (task_id,) in items:
            self.lazy.discard(task_id)
        self.client.flush_now()        # flush the held reports on this loop turn
