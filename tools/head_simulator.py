"""The head's own cost per scheduling decision, on simulated clusters of any size.

Drives the real ``HeadState`` (no processes, no sockets) with N simulated nodes
and one driver, far past what one machine can host.  Each node has one worker
identity that reports its node's results.  The loop, per round:

    driver ──SUBMIT_TASKS (batches)──▶ head ──EXECUTE_TASKS──▶ node N
    worker W ──TASKS_FINISHED (instant run)──▶ head ──OBJECTS_READY──▶ driver
    driver ──REMOVE_REFS (drops each result)──▶ head

keeping at most ``--inflight-factor`` × total CPUs tasks submitted but not
finished.  Only time spent inside ``HeadState`` calls (handle, after_batch,
tick, outbox drain) is counted; the simulated clock advances by that time, so
heartbeats (one per node and driver per simulated second) and ticks (every
0.1 s) cost what they would.  Each run goes in a fresh child process so its RSS
growth is its own.  Variants: ``default`` strategy, ``SPREAD``, and ``deps``
(tasks in pairs, ``f(g())``: the second depends on the first, whose reference
the driver drops at once), and ``local``: the tasks are nested ones that each
node placed itself (``SUBMIT_LOCAL`` from its worker, ``--cpus`` per worker
per batch; the result goes back to that worker, which drops it).  By default the head reads one 1,000-task batch
between placements, so nodes have room (the common path); ``--batches-per-round``
above 1 fills them (the overcommit path).  ``--budget-s`` stops submitting once
the head has been busy that long, so large clusters run fewer tasks (marked *).
Each row also gives the head time of a node joining at size N, and the RSS
growth at each tenth of the run (flat over a long run).  ``--memory-tasks K``
instead measures the head's memory per task in flight (tracemalloc).

    python tools/head_simulator.py --nodes 10,100,1000 --tasks 100000 --json out.json
    python tools/head_simulator.py --nodes 1000,10000 --tasks 200000
    python tools/head_simulator.py --nodes 1000 --memory-tasks 20000
    python tools/head_simulator.py --nodes 100 --variants default --tasks 2000000 \
        --budget-s 1000      # a long run: RSS growth at each tenth stays flat
"""

from __future__ import annotations

import argparse
import itertools
import collections
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zray import ids  # noqa: E402
from zray.config import Config  # noqa: E402
from zray.head.state import HeadState  # noqa: E402
from zray.protocol import (ITEMS, Message, Msg, PROTOCOL_MAJOR, STATUS_OK,  # noqa: E402
                           encode)
from zray.serialization import KIND_INLINE  # noqa: E402
from zray.task_spec import TaskSpec  # noqa: E402

DRIVER = b"Dsimulated-driver"
FUNCTION_ID = b"fid-simulated"
RUN_S = 0.0005            # reported run time: the function counts as short
TICK_S = 0.1              # as zray.head.main
HEARTBEAT_S = 1.0
VARIANTS = ("default", "SPREAD", "deps", "local")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_BYTES


class TimedHead:
    """HeadState with a stopwatch around every call; the simulated clock is the
    head's own busy time."""

    def __init__(self, config, clock=time.perf_counter):
        self.clock = clock
        self.state = HeadState(config, "simulated", 0.0)
        self.busy_s = collections.Counter()
        self.now = 0.0

    def _timed(self, phase, call, *args):
        started = self.clock()
        result = call(*args)
        spent = self.clock() - started
        self.busy_s[phase] += spent
        self.now += spent
        return result

    def send(self, phase, identity, kind, items):
        typed = [ITEMS[kind]._make(item) for item in items]     # as decode hands them over
        self._timed(phase, self.state.handle, identity, Message(kind, typed, []), self.now)

    def after_batch(self):
        self._timed("schedule", self.state.after_batch, self.now)

    def tick(self):
        self._timed("tick", self.state.tick, self.now)

    def drain(self) -> dict:
        """The batches; whole messages and broadcasts (a head with
        ``zray.head.outbox``) are kept in ``whole`` until the next drain."""
        out = self._timed("drain", self.state.out.drain)
        drain_whole = getattr(self.state.out, "drain_whole", None)
        self.whole = [] if drain_whole is None else self._timed("drain", drain_whole)
        return out

    def io_cost(self, out: dict) -> tuple:
        """What the process loop would do to send ``out`` and ``whole``: seconds
        spent encoding (by this clock; the sends themselves not counted) and the
        number of messages sent."""
        started = self.clock()
        for (_identity, kind), items in out.items():
            encode(kind, items)
        if self.whole:
            from zray.head.outbox import frames_of
            for _identity, kind, items in self.whole:
                frames_of(kind, items)
        spent = self.clock() - started
        sends = len(out)
        if self.whole:
            from zray.head.outbox import BROADCAST
            alive = len(self.state.membership.alive_identities())
            sends += sum(alive if identity is BROADCAST else 1
                         for identity, _kind, _items in self.whole)
        return spent, sends

    @property
    def total_s(self) -> float:
        return sum(self.busy_s.values())


class SimCluster:
    """N nodes of ``cpus`` CPUs each, one worker identity per node, one driver."""

    def __init__(self, head: TimedHead, nodes: int, cpus: float, endpoints: bool):
        assert nodes >= 2, "simulate two nodes or more"
        self.head = head
        self.node_ids = [i.to_bytes(4, "big") + b"simnode-" + bytes(4) for i in range(nodes)]
        self.worker_of = {b"N" + n: b"W" + n for n in self.node_ids}
        self.workers = list(self.worker_of.values())
        self.total_cpus = nodes * cpus
        for node_id in self.node_ids[:-2]:
            self._join(node_id, {"resources": {"CPU": cpus}, "host": "sim"})
        before = head.total_s       # the head's own bookkeeping for a join
        self._join(self.node_ids[-2], {"resources": {"CPU": cpus}, "host": "sim"})
        self.bookkeeping_join_s = head.total_s - before
        if endpoints:        # as if every node had sent its transfer endpoint
            for node in head.state.nodes.values():
                node.info["transfer_endpoint"] = f"tcp://10.0.0.1:{node.node_id.hex()}"
        if endpoints and hasattr(head.state.membership, "table"):
            for node in head.state.nodes.values():      # the node table, likewise
                head.state.membership.table.set(node.node_id,
                                                node.info["transfer_endpoint"], True)
            head.state.membership.table.flush()
            head.drain()
            from zray.head.outbox import frames_of     # as earlier joins had them sent
            for block in head.state.membership.table.blocks:
                frames_of(Msg.NODE_TABLE, block)
        before = head.total_s
        info = {"resources": {"CPU": cpus}, "host": "sim"}
        if endpoints:        # real nodes send one: the others must learn of it
            info["transfer_endpoint"] = "tcp://10.0.0.1:last"
        out = self._join(self.node_ids[-1], info)
        self.last_join_s = head.total_s - before
        self.last_join_io_s, self.last_join_sends = head.io_cost(out)
        head.send("join", DRIVER, Msg.HELLO, [("driver", PROTOCOL_MAJOR, 0, 1, {})])
        head.after_batch()
        head.drain()
        # every node heartbeats once as the run starts: joining 10,000 nodes takes
        # longer than the heartbeat limit of head time, and the first would die
        self.heartbeats(force=True)
        head.drain()

    def _join(self, node_id, info):
        self.head.send("join", b"N" + node_id, Msg.REGISTER_NODE,
                       [(node_id, PROTOCOL_MAJOR, 0, info)])
        self.head.send("join", b"W" + node_id, Msg.HELLO,
                       [("worker", PROTOCOL_MAJOR, 0, 1, {"node_id": node_id})])
        self.head.after_batch()
        return self.head.drain()

    def heartbeats(self, force=False):
        """Every node and the driver say they are alive, once a simulated second."""
        if not force and self.head.now - self.last_heartbeat < HEARTBEAT_S:
            return
        self.last_heartbeat = self.head.now
        for node_id in self.node_ids:      # (sent_at,): the peer's wall clock
            self.head.send("heartbeat", b"N" + node_id, Msg.HEARTBEAT, [(self.head.now,)])
        self.head.send("heartbeat", DRIVER, Msg.HEARTBEAT, [(self.head.now,)])


def iter_specs(count: int, variant: str):
    """(spec, driver keeps its result) in submission order, made as they are
    submitted: a 10-million-task run holds only the tasks in flight."""
    strategy = "SPREAD" if variant == "SPREAD" else None
    made = 0
    while made < count:
        first = TaskSpec(ids.new_task_id(), b"\0\0\0\1", "f", FUNCTION_ID, b"",
                         strategy=strategy)
        if variant != "deps" or made + 1 == count:
            made += 1
            yield first, True
            continue
        second = TaskSpec(ids.new_task_id(), b"\0\0\0\1", "g", FUNCTION_ID, b"",
                          dep_ids=tuple(first.return_ids()), strategy=strategy)
        made += 2
        yield first, False
        yield second, True


def make_specs(count: int, variant: str) -> list:
    return list(iter_specs(count, variant))


class Workload:
    """The driver and the workers: submit, run instantly, drop the results."""

    def __init__(self, head, cluster, specs, total, batch, window, budget_s,
                 batches_per_round):
        self.head, self.cluster = head, cluster
        self.specs, self.batch, self.window = specs, batch, window
        self.total = total          # tasks to submit (cut when the budget runs out)
        self.kept = 0               # submitted tasks whose result the driver keeps
        self.budget_s, self.batches_per_round = budget_s, batches_per_round
        self.next_spec = 0
        self.in_flight = 0
        self.to_execute = set()     # submitted, not yet sent to a node: O(window)
        self.to_return = set()      # kept results not yet pushed to the driver
        self.executed = 0
        self.returned = 0
        self.dropped = []                        # results to drop in the next round
        self.finished_now = []                   # (worker, items) to report next round
        self.rounds = 0
        self.local = 0              # local variant: tasks per SUBMIT_LOCAL (else 0)
        self.cursor = 0             # the next node whose worker submits (local)
        self.peak_rss = rss_bytes()
        self.peak_tasks = 0
        self.rss_trace = []        # (tasks submitted, RSS) at each tenth of the run
        self.next_trace = 0

    def run(self):
        next_tick = TICK_S
        while self._more_work():
            self._driver_turn()
            self._workers_turn()
            self.head.after_batch()
            self._route(self.head.drain())
            self.cluster.heartbeats()
            if self.head.now >= next_tick:
                self.head.tick()
                self._route(self.head.drain())
                next_tick = self.head.now + TICK_S
            self._sample()
        return self

    def _more_work(self) -> bool:
        if self.head.total_s > self.budget_s and self.next_spec < self.total:
            self.total = self.next_spec                     # out of time: stop submitting
        return self.next_spec < self.total or self.in_flight or self.dropped \
            or self.finished_now

    def _driver_turn(self):
        if self.dropped:
            by_holder = collections.defaultdict(list)
            for holder, oid in self.dropped:
                by_holder[holder].append((oid,))
            for holder, items in by_holder.items():
                self.head.send("remove_refs", holder, Msg.REMOVE_REFS, items)
            self.dropped = []
        for _ in range(self.batches_per_round):
            if self.in_flight >= self.window or self.next_spec >= self.total:
                break
            room = min(self.batch, self.window - self.in_flight, self.total - self.next_spec)
            chunk = list(itertools.islice(self.specs, room))
            self.kept += sum(1 for _, keep in chunk if keep)
            self.next_spec += len(chunk)
            self.in_flight += len(chunk)
            if self.local:
                self._local_submit(chunk)
                continue
            self.head.send("submit", DRIVER, Msg.SUBMIT_TASKS, [(s,) for s, _ in chunk])
            self.to_execute.update(s.task_id for s, _ in chunk)
            self.to_return.update(oid for s, keep in chunk if keep for oid in s.return_ids())
            unkept = [(oid,) for s, keep in chunk if not keep for oid in s.return_ids()]
            if unkept:                 # g() in f(g()): its ref dies at once
                self.head.send("remove_refs", DRIVER, Msg.REMOVE_REFS, unkept)

    def _local_submit(self, chunk):
        """Workers register what their nodes placed: ``cpus`` tasks per worker
        per message, round robin over the nodes; the nodes run them at once."""
        workers, step = self.cluster.workers, self.local
        for start in range(0, len(chunk), step):
            worker = workers[self.cursor % len(workers)]
            self.cursor += 1
            part = chunk[start:start + step]
            self.head.send("submit", worker, Msg.SUBMIT_LOCAL, [(spec,) for spec, _ in part])
            self.to_return.update(oid for spec, _ in part for oid in spec.return_ids())
            self.executed += len(part)
            self.finished_now.append((worker, [
                (spec.task_id, 0, STATUS_OK,
                 [(oid, KIND_INLINE, b"", 0, ()) for oid in spec.return_ids()], RUN_S)
                for spec, _ in part]))

    def _workers_turn(self):
        for worker, items in self.finished_now:
            self.head.send("finish", worker, Msg.TASKS_FINISHED, items)
            self.in_flight -= len(items)
        self.finished_now = []

    def _route(self, out: dict):
        for (identity, kind), items in out.items():
            if kind is Msg.EXECUTE_TASKS:
                self._run_instantly(identity, items)
            elif kind is Msg.OBJECTS_READY and (identity == DRIVER or self.local):
                for item in items:
                    self.to_return.remove(item[0])       # KeyError: pushed twice
                    self.returned += 1
                    self.dropped.append((identity, item[0]))
            elif kind in (Msg.WARNING, Msg.PROTOCOL_ERROR):
                raise AssertionError(f"head said {kind.name}: {items}")

    def _run_instantly(self, node_identity, items):
        results = []
        for (spec,) in items:
            self.to_execute.remove(spec.task_id)      # KeyError: ran twice
            self.executed += 1
            outs = [(oid, KIND_INLINE, b"", 0, ()) for oid in spec.return_ids()]
            results.append((spec.task_id, spec.attempt, STATUS_OK, outs, RUN_S))
        self.finished_now.append((self.cluster.worker_of[node_identity], results))

    def _sample(self):
        self.rounds += 1
        self.peak_rss = max(self.peak_rss, rss_bytes())        # outside the timing
        self.peak_tasks = max(self.peak_tasks, len(self.head.state.tasks))
        if self.next_spec >= self.next_trace:
            self.rss_trace.append((self.next_spec, rss_bytes()))
            self.next_trace = self.next_spec + max(1, self.total // 10)
        if self.rounds % 500 == 0:          # O(size): now and then, outside the timing
            self.head.state.validate()


def check_clean(head: TimedHead, work: Workload):
    """Every task ran exactly once, every kept result reached the driver once,
    and nothing is left once the driver dropped them all."""
    state = head.state
    submitted = work.next_spec
    assert not work.to_execute and work.executed == submitted, "a task never ran"
    assert not work.to_return, "a kept result never reached the driver"
    assert work.returned == work.kept
    state.validate()
    assert not state.tasks, f"{len(state.tasks)} task records left"
    assert not state.objects, f"{len(state.objects)} object records left"
    assert not state.queues and not state.placeholders
    for client in state.clients.values():
        assert not client.holding, "a client still holds references"
    for node in state.nodes.values():
        assert node.available == node.total, f"node resources leaked: {node.available}"
        assert node.state.value == "ALIVE", f"a node died: {node.death_reason}"
    placed = state.dispatch_counts["local"] if work.local else state.dispatch_counts["node"]
    assert placed == submitted


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def run_one(nodes, tasks, variant, cpus, batch, factor, budget_s, endpoints,
            trace, batches_per_round=1, clock="wall") -> dict:
    config = Config(lease_workers=False)
    specs = iter_specs(tasks, "default" if variant == "local" else variant)
    if trace:
        tracemalloc.start()
    rss_before = rss_bytes()
    head = TimedHead(config, CLOCKS[clock])
    cluster = SimCluster(head, nodes, cpus, endpoints)
    join_s = head.total_s
    head.busy_s.clear()
    window = int(cluster.total_cpus * factor)
    work = Workload(head, cluster, specs, tasks, min(batch, window), window, budget_s,
                    batches_per_round)
    if variant == "local":
        work.local = max(1, int(cpus))
    head.state.validate()
    work.run()
    head.state.validate()
    traced_peak = tracemalloc.get_traced_memory()[1] if trace else None
    check_clean(head, work)
    done = work.next_spec
    work_s = head.total_s - head.busy_s["heartbeat"]
    return {
        "nodes": nodes, "variant": variant, "tasks": done, "tasks_asked": tasks,
        "join_s": round(join_s, 4), "last_join_ms": round(1e3 * cluster.last_join_s, 2),
        "last_join_encode_ms": round(1e3 * cluster.last_join_io_s, 2),
        "last_join_sends": cluster.last_join_sends,
        "bookkeeping_join_ms": round(1e3 * cluster.bookkeeping_join_s, 3),
        "head_s": round(head.total_s, 4),
        "tasks_per_s": round(done / head.total_s), "us_per_task": round(
            1e6 * head.total_s / done, 2), "us_per_task_no_heartbeat": round(
            1e6 * work_s / done, 2),
        "phases_us_per_task": {k: round(1e6 * v / done, 2) for k, v in head.busy_s.items()},
        "rounds": work.rounds, "window": window, "peak_task_records": work.peak_tasks,
        "rss_growth_mib": round((work.peak_rss - rss_before) / 2**20, 1),
        "rss_left_mib": round((rss_bytes() - rss_before) / 2**20, 1),
        "traced_peak_mib": None if traced_peak is None else round(traced_peak / 2**20, 1),
        "rss_trace_mib": [(n, round((r - rss_before) / 2**20, 1)) for n, r in work.rss_trace],
        "validated": True,
    }


def bytes_per_task(nodes, count, variant, cpus) -> dict:
    """The head's memory per task in flight: ``count`` tasks submitted and sent to
    nodes that never report back, traced by tracemalloc.  The specs are made
    inside the traced window, as the head decodes its own copy of each."""
    head = TimedHead(Config(lease_workers=False))
    SimCluster(head, nodes, cpus, endpoints=False)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    specs = make_specs(count, variant)
    for start in range(0, len(specs), 1000):
        chunk = specs[start:start + 1000]
        head.send("submit", DRIVER, Msg.SUBMIT_TASKS, [(s,) for s, _ in chunk])
        unkept = [(oid,) for s, keep in chunk if not keep for oid in s.return_ids()]
        if unkept:
            head.send("remove_refs", DRIVER, Msg.REMOVE_REFS, unkept)
        head.after_batch()
        head.drain()          # sent and gone, as the process loop does
    del specs, chunk
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    state = head.state
    records = len(state.tasks)
    assigned = sum(1 for t in state.tasks.values() if t.state.value == "ASSIGNED")
    rows = len(state.events.rows)
    state.events.clear()
    gc.collect()
    without_events = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    head.state.validate()
    return {"nodes": nodes, "variant": variant, "task_records": records,
            "assigned": assigned, "bytes_per_task": round(used / records),
            "bytes_per_task_without_event_rows": round(without_events / records),
            "event_rows": rows}


def run_in_child(args, nodes, variant) -> dict:
    """One run in a fresh interpreter, so its memory growth is its own."""
    command = [sys.executable, os.path.abspath(__file__), "--child", "--nodes", str(nodes),
               "--variants", variant, "--tasks", str(args.tasks), "--cpus", str(args.cpus),
               "--batch", str(args.batch), "--inflight-factor", str(args.inflight_factor),
               "--budget-s", str(args.budget_s),
               "--batches-per-round", str(args.batches_per_round), "--clock", args.clock]
    command += ["--no-endpoints"] if args.no_endpoints else []
    command += ["--tracemalloc"] if args.tracemalloc else []
    command += ["--memory-tasks", str(args.memory_tasks)] if args.memory_tasks else []
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return {"nodes": nodes, "variant": variant, "error": done.stderr.strip()[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(rows):
    header = (f"{'nodes':>6} {'variant':>8} {'tasks':>8} {'join0 ms':>8} {'join ms':>8} "
              f"{'enc ms':>7} {'sends':>6} {'head s':>7} "
              f"{'tasks/s':>8} {'us/task':>8} {'sched':>7} {'submit':>7} {'finish':>7} "
              f"{'refs':>6} {'tick':>6} {'hb':>6} {'records':>8} {'RSS+MiB':>8} {'left':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['nodes']:>6} {r['variant']:>8}  FAILED: {r['error'][-300:]}")
            continue
        p = r["phases_us_per_task"]
        tasks = f"{r['tasks']}" + ("*" if r["tasks"] < r["tasks_asked"] else "")
        print(f"{r['nodes']:>6} {r['variant']:>8} {tasks:>8} "
              f"{r['bookkeeping_join_ms']:>8.3f} {r['last_join_ms']:>8.3f} "
              f"{r.get('last_join_encode_ms', 0):>7.2f} {r.get('last_join_sends', 0):>6} "
              f"{r['head_s']:>7.2f} {r['tasks_per_s']:>8} {r['us_per_task']:>8.1f} "
              f"{p.get('schedule', 0):>7.1f} {p.get('submit', 0):>7.1f} "
              f"{p.get('finish', 0):>7.1f} {p.get('remove_refs', 0):>6.1f} "
              f"{p.get('tick', 0):>6.1f} {p.get('heartbeat', 0):>6.1f} "
              f"{r['peak_task_records']:>8} {r['rss_growth_mib']:>8.1f} {r['rss_left_mib']:>6.1f}")
    print("us/task columns: head busy time per task, total and by phase (sched = "
          "after_batch, i.e. placement); * = stopped at --budget-s; join0 ms = head time "
          "for the (N-1)-th node to join, without a transfer endpoint (the head's own "
          "bookkeeping); join ms = the N-th, with one (NODE_TABLE to all); enc ms = "
          "encoding what that join sends (by the process loop, not in head s), sends = "
          "messages it sends; records = "
          "most task records held; RSS+MiB = peak growth during the run, left = after it.")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="10,100,1000", help="comma-separated sizes")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--cpus", type=float, default=8.0, help="CPUs per node")
    parser.add_argument("--batch", type=int, default=1000, help="tasks per SUBMIT_TASKS")
    parser.add_argument("--inflight-factor", type=float, default=4.0,
                        help="tasks in flight at most, as a multiple of total CPUs")
    parser.add_argument("--budget-s", type=float, default=10.0,
                        help="head busy seconds per run before it stops submitting")
    parser.add_argument("--batches-per-round", type=int, default=1,
                        help="SUBMIT_TASKS messages the head reads between placements; "
                             "more keeps nodes full (the overcommit path)")
    parser.add_argument("--no-endpoints", action="store_true",
                        help="nodes register without a transfer endpoint (no NODE_TABLE)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also trace Python allocations (slows every figure)")
    parser.add_argument("--memory-tasks", type=int, default=0,
                        help="instead: head memory per task with this many tasks in "
                             "flight (nodes never report back), by tracemalloc")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="time the head's calls by the wall clock, or by the CPU "
                             "time of this process (steadier on a shared machine)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = [int(n) for n in args.nodes.split(",")]
    variants = args.variants.split(",")
    if args.child and args.memory_tasks:
        print(json.dumps(bytes_per_task(sizes[0], args.memory_tasks, variants[0],
                                        args.cpus)))
        return 0
    if args.child:
        print(json.dumps(run_one(sizes[0], args.tasks, variants[0], args.cpus, args.batch,
                                 args.inflight_factor, args.budget_s,
                                 not args.no_endpoints, args.tracemalloc,
                                 args.batches_per_round, args.clock)))
        return 0
    rows = []
    for variant in variants:
        for nodes in sizes:
            rows.append(run_in_child(args, nodes, variant))
            row = rows[-1]
            print(f"  {variant} x {nodes} nodes: "
                  f"{row.get('tasks_per_s', row.get('bytes_per_task', 'failed'))}; RSS "
                  f"growth (tasks, MiB): {row.get('rss_trace_mib')}",
                  file=sys.stderr, flush=True)
    if args.memory_tasks:
        print(f"{'nodes':>6} {'variant':>8} {'records':>8} {'assigned':>8} "
              f"{'B/task':>7} {'w/o rows':>8}")
        for r in rows:
            print(f"{r['nodes']:>6} {r['variant']:>8}  FAILED: {r['error'][-300:]}"
                  if "error" in r else
                  f"{r['nodes']:>6} {r['variant']:>8} {r['task_records']:>8} "
                  f"{r['assigned']:>8} {r['bytes_per_task']:>7} "
                  f"{r['bytes_per_task_without_event_rows']:>8}")
        print("B/task: head memory (tracemalloc) per task record in flight, its spec, "
              "return objects, references and event row included; w/o rows: "
              "without the event history's row (bounded by task_events_max).")
    else:
        print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
