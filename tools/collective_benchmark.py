"""Ring allreduce over zray.util.collective's zmq backend against a raw pyzmq
send of the same bytes, in the same run (issue: >= 70% of raw).

    python tools/collective_benchmark.py [--mb 100] [--runs 5] [--json out.json]

Bus bandwidth of an allreduce of S bytes over n ranks taking t seconds is
S * 2 (n - 1) / n / t: the bytes each rank sends (and receives); for n = 2
it is S / t.  The raw figure is one PUSH -> PULL of S bytes between two
processes on the same transport (ipc, as a local zray cluster uses), zero-copy
on both sides.  Medians of --runs, after one warm-up each.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import zray  # noqa: E402


@zray.remote(num_cpus=0)
class Rank:
    def __init__(self, rank):
        self.rank = rank

    def join(self, world_size):
        from zray.util import collective as col
        col.init_collective_group(world_size, self.rank, backend="zmq", group_name="bench")

    def allreduce(self, size_bytes, runs):
        from zray.util import collective as col
        array = np.ones(size_bytes // 8)
        col.allreduce(array, group_name="bench")                 # warm-up
        times = []
        for _ in range(runs):
            col.barrier("bench")
            start = time.perf_counter()
            col.allreduce(array, group_name="bench")
            times.append(time.perf_counter() - start)
        return times


def _raw_receiver(endpoint, size_bytes, runs, ready):
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(endpoint)
    ack = ctx.socket(zmq.PUSH)
    ack.connect(endpoint + ".ack")
    ready.set()
    for _ in range(runs + 1):
        frame = pull.recv(copy=False)
        assert len(frame) == size_bytes
        ack.send(b"")
    pull.close()
    ack.close()
    ctx.term()


def raw_send(size_bytes: int, runs: int) -> list:
    folder = tempfile.mkdtemp(prefix="zray-bench-")
    endpoint = f"ipc://{folder}/raw"
    ctx = zmq.Context()
    acks = ctx.socket(zmq.PULL)
    acks.bind(endpoint + ".ack")
    ready = multiprocessing.Event()
    receiver = multiprocessing.Process(target=_raw_receiver,
                                       args=(endpoint, size_bytes, runs, ready))
    receiver.start()
    ready.wait(30)
    push = ctx.socket(zmq.PUSH)
    push.connect(endpoint)
    payload = np.ones(size_bytes // 8)
    times = []
    for run in range(runs + 1):
        start = time.perf_counter()
        push.send(payload, copy=False)
        acks.recv()
        if run:                                   # the first is the warm-up
            times.append(time.perf_counter() - start)
    receiver.join(30)
    push.close()
    acks.close()
    ctx.term()
    for name in os.listdir(folder):
        os.unlink(os.path.join(folder, name))
    os.rmdir(folder)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", dest="json_path", help="write the figures here as JSON")
    args = parser.parse_args()
    size_bytes = args.mb * 1024 * 1024
    raw = statistics.median(raw_send(size_bytes, args.runs))
    zray.init(num_cpus=2)
    try:
        ranks = [Rank.remote(r) for r in range(2)]
        zray.get([r.join.remote(2) for r in ranks])
        times = zray.get([r.allreduce.remote(size_bytes, args.runs) for r in ranks])
        ring = statistics.median(max(pair) for pair in zip(*times))
    finally:
        zray.shutdown()
    raw_gbs = size_bytes / raw / 1e9
    ring_gbs = size_bytes / ring / 1e9         # bus bandwidth, n = 2
    print(f"allreduce of {args.mb} MiB, 2 ranks (zmq backend, ipc): {ring:.3f} s, "
          f"bus bandwidth {ring_gbs:.2f} GB/s")
    print(f"raw pyzmq send of {args.mb} MiB (ipc, zero-copy):        {raw:.3f} s, "
          f"{raw_gbs:.2f} GB/s")
    print(f"ratio: {ring_gbs / raw_gbs:.2f} (target >= 0.70); medians of {args.runs} runs")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"mb": args.mb, "runs": args.runs, "allreduce_s": ring,
                       "raw_s": raw, "allreduce_gbs": ring_gbs, "raw_gbs": raw_gbs,
                       "ratio": ring_gbs / raw_gbs}, f)


if __name__ == "__main__":
    main()
