"""The head's memory under many tasks whose results are dropped as they arrive.

Submits ``--tasks`` tiny tasks in batches of ``--batch`` to a local cluster,
gets each batch and drops it, and samples the head process's RSS after every
batch.  Lineage (task records, pinned arguments) is kept only while results are
referenced, so the head's memory must stay flat.

    python tools/head_memory.py --tasks 1000000
"""

from __future__ import annotations

import argparse
import time

import psutil

import zray


@zray.remote
def tiny(i):
    return i


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args(argv)
    zray.init(num_cpus=2)
    try:
        from zray import _runtime
        head = psutil.Process(_runtime.get_runtime().cluster.head.pid)
        start_rss = head.memory_info().rss
        peak = start_rss
        started = time.monotonic()
        done = 0
        while done < args.tasks:
            count = min(args.batch, args.tasks - done)
            refs = [tiny.remote(i) for i in range(done, done + count)]
            assert zray.get(refs)[-1] == done + count - 1
            del refs
            done += count
            rss = head.memory_info().rss
            peak = max(peak, rss)
            if done % (args.batch * 10) == 0 or done == args.tasks:
                print(f"{done:>9,} tasks  {time.monotonic() - started:6.1f} s  head RSS "
                      f"{rss / 2**20:6.1f} MiB (peak {peak / 2**20:.1f})", flush=True)
        summary = zray.util.state.list_tasks(limit=10)
        print(f"head RSS: {start_rss / 2**20:.1f} MiB at start, {peak / 2**20:.1f} MiB peak, "
              f"{head.memory_info().rss / 2**20:.1f} MiB at the end; task records left: "
              f"{len(summary)}")
    finally:
        zray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
