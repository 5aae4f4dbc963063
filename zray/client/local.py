"""Tasks a worker offers its own node to place (Config.local_placement): part of
``ClientState``.

A plain task (``zray.resources.local_placeable``) goes to our node
(PLACE_TASKS), which runs it if it fits what is free now or spills it back to
the head; the head hears of it from us in any case (SUBMIT_LOCAL,
bookkeeping), on the socket that carries everything else we tell it about the
task's refs, so it never learns of them before the task.  Only while we await
few results of our own (a one-at-a-time loop always; a burst its first few,
the rest go to the head, which spreads bursts over the cluster), and not for
``LOCAL_PAUSE_S`` after the node spilled a task of that resource shape.
"""

from __future__ import annotations

from collections import OrderedDict

from zray.client.routes import HEAD, NODE
from zray.protocol import Msg
from zray.resources import local_placeable

#: Seconds a worker whose node spilled one of its offers sends tasks of that
#: resource shape to the head directly (the node has no room for them now).
LOCAL_PAUSE_S = 0.05
#: Offers whose shape we remember, to know which shape a spill is about.
REMEMBERED_OFFERS = 64


class LocalOffers:
    def __init__(self, client, max_awaited: int = 4):
        self.client = client                # the ClientState this is part of
        self.enabled = False
        self.max_awaited = max_awaited      # Config.local_placement_max_awaited
        self.node_functions: set = set()    # functions whose code our node has from us
        self.offered: OrderedDict = OrderedDict()   # task id -> shape, the last few
        self.paused: dict = {}              # shape -> time offers of it resume

    def try_offer(self, spec, awaited: int, now: float) -> bool:
        """Offer ``spec`` to our node (True) when it may go there; ``awaited``:
        results of our other tasks we still wait for."""
        if not self.enabled or awaited >= self.max_awaited or not local_placeable(spec):
            return False
        shape = tuple(spec.resources.items())
        if self.paused and now < self.paused.get(shape, 0.0):
            return False
        send = spec
        if spec.function_id not in self.node_functions:
            blob = self.client.function_blobs.get(spec.function_id)
            if blob is not None:           # (without it the node spills the task)
                self.node_functions.add(spec.function_id)
                send = spec.copy()
                send.function_blob = blob
        self.offered[spec.task_id] = shape
        if len(self.offered) > REMEMBERED_OFFERS:
            self.offered.popitem(last=False)
        self.client.send(NODE, Msg.PLACE_TASKS, (send,))
        self.client.send(HEAD, Msg.SUBMIT_LOCAL, (spec,))
        return True

    def spilled(self, items, now: float) -> None:
        """TASKS_SPILLED from our node: no room for that shape now (for a task
        we no longer remember, pause every shape we offered lately)."""
        for task_id, _attempt in items:
            shape = self.offered.get(task_id)
            shapes = {shape} if shape is not None else set(self.offered.values())
            for each in shapes:
                self.paused[each] = now + LOCAL_PAUSE_S
        for shape, until in list(self.paused.items()):
            if until <= now:
                del self.paused[shape]


__all__ = ["LocalOffers", "LOCAL_PAUSE_S"]
