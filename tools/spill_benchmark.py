#!/usr/bin/env python
"""Spilling throughput: objects through a store bound, next to the raw disk.

One run, in this order, in the same spill directory (``--dir``):

1. **raw write / read**: a dd-style sequential write of the bytes that must go
   to disk (``--total-gb`` minus ``--bound-gb``) in 64 MiB writes to one file,
   then a sequential read of it back in 64 MiB reads; once before the store
   phases and once after them, and the faster of the two is the reference
   (the first write of a run often meets the kernel's dirty-page throttling).
2. **spill**: ``put`` ``--total-gb`` of arrays (``--block-mb`` each), keeping
   every ref, into a store bounded at ``--bound-gb``: the store must spill
   what does not fit.  Rate: the bytes beyond the bound / the time of the puts.
3. **restore**: ``get`` every array in put order (the oldest were spilled),
   check its first and last element, drop it.  Rate: the same bytes / the time
   of the gets.  (Each restore also makes room: it spills an array still in
   memory that had no spill file yet, so this phase writes as well as reads.)
4. **pipeline**: tasks each produce a block (4x the bound in all), tasks sum
   them; the sums are added and checked against the exact answer.

Caveats: nothing is fsync'ed, neither by the raw writes nor by the store (nor
by Ray), so writes land in the page cache and the kernel writes them back
when it will; with memory to spare the reads are then served from the page
cache too.  Dropping the cache needs root (``echo 3 >
/proc/sys/vm/drop_caches``); ``--drop-caches`` tries it between phases and
says whether it could.  Raw and store rates are measured under the same
conditions in the same run, which is what the comparison needs.

    python tools/spill_benchmark.py --dir /tmp/spill-bench              # zray
    python tools/spill_benchmark.py --compare ray --python-for-peer ray=/opt/ray/bin/python

``--compare ray`` runs the same workload on Ray in a second process (with the
given python, else this one); a peer that is not importable is reported and
skipped.  Units: 1 GB = 10**9 bytes, 1 MB = 10**6 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

GB = 10 ** 9
MB = 10 ** 6
RAW_STEP = 64 * 2 ** 20


def drop_caches() -> bool:
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def raw_disk(directory: str, nbytes: int) -> dict:
    """dd-style: sequential 64 MiB writes of ``nbytes``, then reads of them."""
    import numpy as np
    buffer = np.random.default_rng(0).integers(0, 255, RAW_STEP, dtype=np.uint8).tobytes()
    path = os.path.join(directory, "raw-dd.bin")
    start = time.perf_counter()
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    written = 0
    while written < nbytes:
        written += os.write(fd, buffer[:min(RAW_STEP, nbytes - written)])
    os.close(fd)
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    read = 0
    while True:
        data = os.read(fd, RAW_STEP)
        if not data:
            break
        read += len(data)
    os.close(fd)
    read_s = time.perf_counter() - start
    os.unlink(path)
    return {"raw_write_gbps": written / write_s / GB, "raw_read_gbps": read / read_s / GB}


def start(framework: str, bound: int, spill_dir: str):
    config = {"object_spilling_config": json.dumps(
        {"type": "filesystem", "params": {"directory_path": spill_dir}})}
    if framework == "zray":
        import zray as ray
    else:
        import ray
    ray.init(num_cpus=2, object_store_memory=bound, _system_config=config,
             include_dashboard=False)
    return ray


def spill_and_restore(ray, total: int, bound: int, block: int) -> dict:
    import numpy as np
    count = total // block
    arrays = [np.full(block // 8, i, dtype=np.int64) for i in range(2)]   # made once
    refs = []
    start_s = time.perf_counter()
    for i in range(count):
        source = arrays[i % 2]
        source[0] = source[-1] = i
        refs.append(ray.put(source))
    put_s = time.perf_counter() - start_s
    beyond = total - bound
    start_s = time.perf_counter()
    for i, ref in enumerate(refs):
        value = ray.get(ref)
        assert value[0] == i and value[-1] == i, (i, value[0], value[-1])
        del value
    get_s = time.perf_counter() - start_s
    del refs, ref
    return {"objects": count, "spill_put_s": put_s, "restore_get_s": get_s,
            "spill_gbps": beyond / put_s / GB, "restore_gbps": beyond / get_s / GB}


def pipeline(ray, total: int, block: int) -> dict:
    import numpy as np

    @ray.remote
    def produce(i):
        return np.full(block // 8, i, dtype=np.int64)

    @ray.remote
    def consume(array):
        return int(array.sum())

    count = total // block
    start_s = time.perf_counter()
    sums = ray.get([consume.remote(produce.remote(i)) for i in range(count)])
    elapsed = time.perf_counter() - start_s
    expected = sum(range(count)) * (block // 8)
    assert sum(sums) == expected, (sum(sums), expected)
    return {"pipeline_blocks": count, "pipeline_s": elapsed,
            "pipeline_gbps": count * block / elapsed / GB, "pipeline_ok": True}


def worker(framework: str, options) -> dict:
    total, bound = int(options.total_gb * GB), int(options.bound_gb * GB)
    block = int(options.block_mb * MB)
    spill_dir = tempfile.mkdtemp(prefix=f"{framework}-", dir=options.dir)
    result = {"framework": framework}
    try:
        before = raw_disk(spill_dir, total - bound)
        if options.drop_caches:
            result["caches_dropped"] = drop_caches()
        ray = start(framework, bound, spill_dir)
        try:
            result.update(spill_and_restore(ray, total, bound, block))
            result.update(pipeline(ray, options.pipeline_factor * bound, block))
            if framework == "zray":
                result["store"] = ray.nodes()[0].get("ObjectStore")
        finally:
            ray.shutdown()
        after = raw_disk(spill_dir, total - bound)
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)
    result["raw_runs"] = [before, after]       # the faster of the two is the reference
    for key in ("raw_write_gbps", "raw_read_gbps"):
        result[key] = max(before[key], after[key])
    result["spill_vs_raw"] = result["spill_gbps"] / result["raw_write_gbps"]
    result["restore_vs_raw"] = result["restore_gbps"] / result["raw_read_gbps"]
    return result


def run_in_process(framework: str, python: str, options) -> dict:
    argv = [python, os.path.abspath(__file__), "--worker", framework,
            "--total-gb", str(options.total_gb), "--bound-gb", str(options.bound_gb),
            "--block-mb", str(options.block_mb), "--dir", options.dir,
            "--pipeline-factor", str(options.pipeline_factor)]
    if options.drop_caches:
        argv.append("--drop-caches")
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if framework == "zray":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    probe = subprocess.run([python, "-c", f"import {framework}"], capture_output=True, env=env)
    if probe.returncode != 0:
        return {"framework": framework, "error": f"{framework} is not importable with "
                                                 f"{python}"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env,
                          timeout=options.timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"framework": framework, "error": done.stderr[-2000:]}
    return json.loads(lines[-1])


def report(result: dict) -> None:
    name = result["framework"]
    if "error" in result:
        print(f"{name}: skipped: {result['error']}")
        return
    print(f"{name}: {result['objects']} objects, bound via object_store_memory")
    runs = "  ".join(f"{r['raw_write_gbps']:.2f}/{r['raw_read_gbps']:.2f}"
                     for r in result["raw_runs"])
    print(f"  raw write/read GB/s before and after the store phases: {runs}")
    print(f"  raw write {result['raw_write_gbps']:.2f} GB/s   spill (put) "
          f"{result['spill_gbps']:.2f} GB/s   = {result['spill_vs_raw']:.0%} of raw")
    print(f"  raw read  {result['raw_read_gbps']:.2f} GB/s   restore (get) "
          f"{result['restore_gbps']:.2f} GB/s   = {result['restore_vs_raw']:.0%} of raw")
    print(f"  pipeline {result['pipeline_blocks']} blocks in {result['pipeline_s']:.1f} s "
          f"({result['pipeline_gbps']:.2f} GB/s), sum correct: {result['pipeline_ok']}")
    if result.get("store"):
        print(f"  store at the end: {result['store']}")
    if "caches_dropped" in result:
        print(f"  page cache dropped before the store phases: {result['caches_dropped']}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total-gb", type=float, default=4.0)
    parser.add_argument("--bound-gb", type=float, default=1.0)
    parser.add_argument("--block-mb", type=float, default=100.0)
    parser.add_argument("--pipeline-factor", type=int, default=4,
                        help="the pipeline moves this many times the bound")
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "spill-bench"),
                        help="spill directory (on the disk to measure)")
    parser.add_argument("--compare", default="", help="peers to run too: ray")
    parser.add_argument("--python-for-peer", action="append", default=[],
                        help="PEER=PYTHON, e.g. ray=/opt/ray/bin/python")
    parser.add_argument("--drop-caches", action="store_true",
                        help="drop the page cache before the store phases (needs root)")
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    options = parse_args(argv)
    os.makedirs(options.dir, exist_ok=True)
    if options.worker:
        print(json.dumps(worker(options.worker, options)), flush=True)
        return 0
    pythons = {"zray": sys.executable, "ray": sys.executable}
    for item in options.python_for_peer:
        for pair in item.split(","):
            peer, sep, python = pair.partition("=")
            if not sep or peer != "ray":
                raise SystemExit(f"--python-for-peer expects ray=PYTHON, got {pair!r}")
            pythons[peer] = python
    frameworks = ["zray"] + [p for p in options.compare.split(",") if p]
    print(f"{options.total_gb:g} GB through a {options.bound_gb:g} GB bound in "
          f"{options.block_mb:g} MB blocks; spill dir {options.dir}")
    results = []
    for framework in frameworks:
        result = run_in_process(framework, pythons[framework], options)
        report(result)
        results.append(result)
    if options.json:
        with open(options.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
