"""Nodes by free capacity, per resource shape: placement that never scans the cluster.

Tasks that ask for the same resources (a *shape*, e.g. ``{"CPU": 1}``) form a
scheduling class, as in Ray.  For every shape the scheduler places, the index
keeps the nodes it can go to, updated incrementally whenever a node's free or
total resources or its state change (``refresh``), so a placement decision
costs O(log N) at worst and usually O(1):

    fit      alive nodes whose free resources fit the shape now: a set, and
             views of it kept while read (``Ordered``): in join order (a sorted
             list, for SPREAD's rotating cursor), the first joined (a heap) and
             by free CPU fraction (a heap with lazy deletion, for "the least
             used node");
    half     those of ``fit`` below half use (free CPU fraction > 0.5), in join
             order: the default strategy packs onto the first of them;
    room     per overcommit factor, alive nodes that may queue the shape beyond
             their free resources (``has_room``), in join order and by free
             fraction: where a task goes when no node fits it now;
    feasible alive nodes whose *total* resources fit the shape: a shape with
             none is infeasible, known without a scan.

A node is a ``seq`` (its join order) here; the heap entries carry the node's
``version`` (bumped whenever its free fraction changes), so an entry that went
stale is dropped when it reaches the top, and the heaps are rebuilt when stale
entries outnumber live ones: memory stays proportional to nodes × shapes.
Shapes not placed for a while are forgotten and rebuilt (one O(N) pass) when
they come back.  ``validate`` compares every set and order with a full
recomputation from the node table.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from heapq import heapify, heappop, heappush

from zray.head.records import NodeState
from zray.resources import EPSILON

#: Placement passes after which a shape with no queued task is forgotten.
SHAPE_IDLE_PASSES = 2000


def shape_key(request: dict) -> tuple:
    if len(request) < 2:            # most: {"CPU": 1.0} or {}; no sort needed
        return tuple(request.items())
    return tuple(sorted(request.items()))


def free_fraction(node) -> float:
    """The node's free CPU share, the scheduler's measure of how used it is."""
    total = node.total.get("CPU", 0.0)
    if total <= 0:
        return 1.0
    return node.available.get("CPU", 0.0) / total


def _fits(items, available) -> bool:
    for name, amount in items:
        if amount > available.get(name, 0.0) + EPSILON:
            return False
    return True


def has_room(items, node, factor) -> bool:
    """The node may queue the shape: its totals fit it, and its commitments stay
    within ``factor`` times its totals (``node_overcommit_factor``)."""
    total, available = node.total, node.available
    if not _fits(items, total):
        return False
    for name, amount in items:
        if amount and available.get(name, 0.0) + factor * total.get(name, 0.0) \
                < amount - EPSILON:
            return False
    return True


class Ordered:
    """A set of node seqs, with three views kept only while they are read.

    ``order`` (a sorted list: the member after a cursor, for SPREAD), ``firsts``
    (a min-heap of seqs: the first joined) and ``heap`` (by free fraction: the
    least used).  A view not read for more updates than twice the members is
    dropped and built again (O(members)) when next read; so each decision pays
    O(log N) for the views it uses and nothing for the others.  Heap entries
    that went stale (a member gone, or its fraction changed since) are dropped
    when they reach the top."""

    __slots__ = ("members", "order", "firsts", "heap", "unread")

    def __init__(self):
        self.members = set()
        self.order = None
        self.firsts = None
        self.heap = None
        self.unread = [0, 0, 0]     # updates since each view was last read

    def _limit(self) -> int:
        return 2 * len(self.members) + 64

    def add(self, seq, index, changed: bool) -> None:
        unread = self.unread
        if seq not in self.members:
            self.members.add(seq)
            if self.order is not None:
                insort(self.order, seq)
                unread[0] += 1
                if unread[0] > self._limit():
                    self.order = None
            if self.firsts is not None:
                heappush(self.firsts, seq)
                unread[1] += 1
                if unread[1] > self._limit() or len(self.firsts) > self._limit():
                    self.firsts = None
        elif not changed:
            return
        heap = self.heap
        if heap is not None:
            heappush(heap, (-index.fracs[seq], seq, index.versions[seq]))
            unread[2] += 1
            if unread[2] > self._limit():
                self.heap = None            # not read lately: stop keeping it
            elif len(heap) > self._limit():
                self.rebuild(index)

    def discard(self, seq) -> None:
        if seq in self.members:
            self.members.remove(seq)
            if self.order is not None:
                del self.order[bisect_left(self.order, seq)]
            # firsts and heap: the entry goes stale, dropped when it comes up

    def rebuild(self, index) -> None:
        self.heap = [(-index.fracs[s], s, index.versions[s]) for s in self.members]
        heapify(self.heap)

    def first(self):
        """The member that joined first."""
        if self.firsts is None:
            self.firsts = sorted(self.members)      # a sorted list is a heap
        self.unread[1] = 0
        firsts, members = self.firsts, self.members
        while firsts:
            if firsts[0] in members:
                return firsts[0]
            heappop(firsts)
        return None

    def most_free(self, index):
        """The member with the largest free fraction (the first joined on a tie)."""
        if self.heap is None:
            self.rebuild(index)
        self.unread[2] = 0
        heap = self.heap
        members = self.members
        versions = index.versions
        while heap:
            _neg, seq, version = heap[0]
            if seq in members and versions[seq] == version:
                return seq
            heappop(heap)
        return None

    def after(self, cursor):
        """The first member joined after ``cursor``, wrapping round."""
        if self.order is None:
            self.order = sorted(self.members)
        self.unread[0] = 0
        order = self.order
        if not order:
            return None
        i = bisect_right(order, cursor)
        return order[i] if i < len(order) else order[0]


class Shape:
    """The index for one resource shape (see the module docstring)."""

    __slots__ = ("items", "fit", "half", "room", "feasible", "used")

    def __init__(self, key: tuple, factors):
        self.items = tuple((name, amount) for name, amount in key if amount)
        self.fit = Ordered()
        self.half = Ordered()
        self.room = {factor: Ordered() for factor in factors}
        self.feasible = set()
        self.used = 0

    def refresh(self, seq, node, alive: bool, index, changed: bool) -> None:
        items = self.items
        if alive and _fits(items, node.available):
            self.fit.add(seq, index, changed)
            if index.fracs[seq] > 0.5:
                self.half.add(seq, index, changed)
            else:
                self.half.discard(seq)
        else:
            self.fit.discard(seq)
            self.half.discard(seq)
        total = node.total
        if alive and _fits(items, total):
            self.feasible.add(seq)
            available = node.available
            for factor, ordered in self.room.items():
                for name, amount in items:        # has_room, its totals known to fit
                    if available.get(name, 0.0) + factor * total.get(name, 0.0) \
                            < amount - EPSILON:
                        ordered.discard(seq)
                        break
                else:
                    ordered.add(seq, index, changed)
        else:
            self.feasible.discard(seq)
            for ordered in self.room.values():
                ordered.discard(seq)


class NodeIndex:
    """Every node the head knows, by seq, and one ``Shape`` per resource shape."""

    def __init__(self, factors):
        self.factors = tuple(sorted(set(factors)))
        self.seq_of = {}        # node id -> seq
        self.nodes = []         # seq -> Node
        self.fracs = []         # seq -> free fraction as last refreshed
        self.versions = []      # seq -> bumped when its fraction changes
        self.shapes = {}        # shape key -> Shape
        self.passes = 0         # placement passes so far (ages unused shapes)
        #: seq -> node: released resources not yet applied (``refresh_later``)
        self.stale = {}

    # --- keeping it current ----------------------------------------------------------

    def add_node(self, node) -> None:
        seq = self.seq_of.get(node.node_id)
        if seq is None:
            seq = self.seq_of[node.node_id] = len(self.nodes)
            self.nodes.append(node)
            self.fracs.append(free_fraction(node))
            self.versions.append(0)
        else:                   # registered again under the same id: a new record
            self.nodes[seq] = node
        self.refresh(node)

    def refresh_later(self, node) -> None:
        """As ``refresh``, applied at the next ``settle``: a batch of finished
        tasks refreshes each node once, not once per task.  Only for changes
        that free resources (a placement meanwhile may miss them, never
        overcommit)."""
        seq = self.seq_of.get(node.node_id)
        if seq is not None:
            self.stale[seq] = node

    def settle(self) -> None:
        """Apply the refreshes put off by ``refresh_later``."""
        stale, self.stale = self.stale, {}
        for node in stale.values():
            self.refresh(node)

    def refresh(self, node) -> None:
        """The node's free or total resources or its state changed."""
        seq = self.seq_of.get(node.node_id)
        if seq is None or self.nodes[seq] is not node:
            return
        if self.stale:
            self.stale.pop(seq, None)
        frac = free_fraction(node)
        changed = frac != self.fracs[seq]
        if changed:
            self.fracs[seq] = frac
            self.versions[seq] += 1
        alive = node.state is NodeState.ALIVE
        for shape in self.shapes.values():
            shape.refresh(seq, node, alive, self, changed)

    def shape(self, key: tuple) -> Shape:
        """The index of a shape, built (one pass over the nodes) on first use."""
        if self.stale:
            self.settle()
        shape = self.shapes.get(key)
        if shape is None:
            shape = self.shapes[key] = Shape(key, self.factors)
            for seq, node in enumerate(self.nodes):
                shape.refresh(seq, node, node.state is NodeState.ALIVE, self, True)
        shape.used = self.passes
        return shape

    def end_pass(self, queued_keys) -> None:
        """One placement pass is over: forget shapes long unused and not queued."""
        self.passes += 1
        if self.passes % 100:
            return
        for key, shape in list(self.shapes.items()):
            if self.passes - shape.used > SHAPE_IDLE_PASSES and key not in queued_keys:
                del self.shapes[key]

    # --- reading it ------------------------------------------------------------------

    def node(self, seq):
        return None if seq is None else self.nodes[seq]

    def seq(self, node_id):
        return self.seq_of.get(node_id)

    def most_free(self, ordered):
        return ordered.most_free(self)

    # --- checks ----------------------------------------------------------------------

    def validate(self, nodes: dict) -> None:
        """Every shape's sets equal what a full recomputation gives."""
        self.settle()
        assert set(self.seq_of) == set(nodes), "the node index lacks or keeps a node"
        for node_id, node in nodes.items():
            seq = self.seq_of[node_id]
            assert self.nodes[seq] is node, f"stale index record for {node_id.hex()}"
            assert self.fracs[seq] == free_fraction(node), \
                f"node {node_id.hex()} changed without an index refresh"
        for key, shape in self.shapes.items():
            fresh = Shape(key, self.factors)
            for seq, node in enumerate(self.nodes):
                fresh.refresh(seq, node, node.state is NodeState.ALIVE, self, True)
            assert shape.feasible == fresh.feasible, f"feasible set of {key} is stale"
            pairs = [(shape.fit, fresh.fit), (shape.half, fresh.half)] + \
                [(shape.room[f], fresh.room[f]) for f in self.factors]
            for kept, recomputed in pairs:
                assert kept.members == recomputed.members, f"index of {key} is stale"
                assert kept.order is None or kept.order == sorted(recomputed.members), \
                    f"order of {key} broken"
                if kept.firsts is not None:
                    assert kept.first() == min(recomputed.members, default=None), \
                        f"first of {key} is wrong"
                if kept.heap is not None:     # (a heap not kept is built when read)
                    best = min(((-self.fracs[s], s) for s in recomputed.members),
                               default=(None, None))[1]
                    assert self.most_free(kept) == best, f"most-free of {key} is wrong"


__all__ = ["NodeIndex", "Shape", "Ordered", "shape_key", "free_fraction", "has_room",
           "SHAPE_IDLE_PASSES"]
