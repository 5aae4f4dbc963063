#!/usr/bin/env python
"""Data-parallel training: zray's TorchTrainer against torchrun and Ray Train.

The same 2-worker DDP training (an MLP on synthetic data, a fixed number of
steps, gloo on CPU, the same seed, batch size and optimizer) is run

- by ``zray.train.torch.TorchTrainer`` with ``ScalingConfig(num_workers=2)``,
- by ``torchrun --standalone --nproc_per_node 2`` (``python -m
  torch.distributed.run``) running the same loop with torch.distributed
  directly, and
- with ``--compare ray``, by Ray Train's ``TorchTrainer`` (same arguments),
  in the interpreter given by ``--python-for-peer ray=PYTHON`` (a virtualenv
  made by ``tools/microbenchmark.py --setup-peers DIR`` plus ``torch==2.13.0``
  and ``ray[train]``).

Every run is a fresh process (a fresh cluster for the trainers), and runs
alternate frameworks (torchrun, zray, ray, torchrun, zray, ray, ...) so that
slow drift of the machine's load hits each alike.  Times, all from the
driver's clock (``time.time()``, one machine):

- ``startup_s``: from the launch of the process (just before ``Popen``) to
  the end of rank 0's first training step.  The same origin for all three:
  it includes the interpreter, imports, cluster start (``init``), worker
  start, process-group set-up and the first step itself.
- ``fit_to_first_step_s``: from the ``trainer.fit()`` call to the end of the
  first step (trainers only; torchrun has no such call).
- ``step_ms``: steady-state time per step on rank 0: (end of the last step -
  end of step ``--warmup-steps``) / (steps - warmup steps).
- ``total_s``: launch to process exit (includes shutdown).

Each training step is forward, backward (DDP allreduce of the gradients),
optimizer step and ``loss.item()``.  The trainers' loops call
``train.report({"step", "loss"})`` once, after the last step (a one-epoch run
reporting per epoch), and with ``--report-every N`` also every N steps
(``--report-every 1``: every step, the heaviest use; Ray Train 2.x then
stalls each report until its controller polls the worker, every 2 s by
default, so leave Ray out of that one).  The final loss is printed for each
framework: equal losses show the three trained the same thing.

``rank-0 CPU/step``: CPU seconds (user + system, all threads) of rank 0's
process per steady-state step.  It hardly moves with the machine's load, so
on a shared machine it shows a framework's own per-step cost better than the
wall time does.  Also printed: medians of the per-round ratios (the
frameworks of a round run back to back).

Also measured, in the same run (unless ``--no-collective``): the ring
allreduce of 100 MiB numpy arrays over ``zray.util.collective``'s zmq backend
between 2 processes, against a raw pyzmq send of the same bytes
(``tools/collective_benchmark.py``).

Usage (from the repository root)::

    python tools/train_benchmark.py                          # zray vs torchrun, 3 runs
    python tools/train_benchmark.py --compare ray \\
        --python-for-peer ray=/root/peers-venv/bin/python --runs 5 --json train.json
    python tools/train_benchmark.py --quick                  # smoke check

Medians of ``--runs`` are printed; every sample goes to ``--json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("torchrun", "zray", "ray")
NUM_WORKERS = 2
TARGET_STEP_RATIO = 1.05         # zray step time / torchrun step time, at most
TARGET_STARTUP_RATIO = 3.0       # Ray Train start-up / zray start-up, at least
TARGET_COLLECTIVE_RATIO = 0.70   # zray ring allreduce / raw pyzmq send, at least


# ---------------------------------------------------------------------------
# The training loop: the same function under all three launchers.


def make_model(config):
    import torch
    layers, width = [], config["input_dim"]
    for _ in range(config["layers"]):
        layers += [torch.nn.Linear(width, config["hidden"]), torch.nn.ReLU()]
        width = config["hidden"]
    layers.append(torch.nn.Linear(width, config["classes"]))
    return torch.nn.Sequential(*layers)


def _usage() -> dict:
    """This process's CPU seconds, page faults and context switches so far."""
    import resource
    used = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": used.ru_utime + used.ru_stime, "minflt": used.ru_minflt,
            "nvcsw": used.ru_nvcsw, "nivcsw": used.ru_nivcsw}


def train_loop(config):
    """DDP training of an MLP on synthetic batches; rank 0 writes its step
    times to ``config["out"]``.  ``config["api"]`` says who launched it."""
    entered = time.time()
    import torch
    import torch.distributed as dist
    api = config["api"]
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(config["seed"])
    model = make_model(config)
    report = None
    if api == "zray":
        import zray.train
        from zray.train.torch import prepare_model
        model, report = prepare_model(model), zray.train.report
    elif api == "ray":
        import ray.train
        from ray.train.torch import prepare_model
        model, report = prepare_model(model), ray.train.report
    else:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9)
    generator = torch.Generator().manual_seed(config["seed"] * 1000 + rank)
    batches = [(torch.randn(config["batch"], config["input_dim"], generator=generator),
                torch.randint(0, config["classes"], (config["batch"],), generator=generator))
               for _ in range(config["distinct_batches"])]
    ready = time.time()
    every = config["report_every"]
    usage = []
    stamps = []
    loss_value = None
    for step in range(config["steps"]):
        x, y = batches[step % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        loss_value = loss.item()
        if report is not None and every and (step + 1) % every == 0:
            report({"step": step, "loss": loss_value})
        stamps.append(time.time())
        if step + 1 in (config["warmup_steps"], config["steps"]):
            usage.append(_usage())
    if report is not None:
        report({"step": config["steps"] - 1, "loss": loss_value})   # the run's result
    if rank == 0:
        record = {"stamps": stamps, "loop_entered": entered, "ready": ready,
                  "final_loss": loss_value, "usage": usage,
                  "world_size": world, "torch_threads": torch.get_num_threads(),
                  "interop_threads": torch.get_num_interop_threads(),
                  "env": {k: os.environ.get(k) for k in
                          ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
                  "pid": os.getpid()}
        with open(config["out"] + ".loop", "w") as f:
            json.dump(record, f)


# ---------------------------------------------------------------------------
# Roles: what one launched process does.


def role_trainer(framework: str, config: dict, storage: str) -> None:
    marks = {"imported": None, "initialized": None, "fit_called": None, "fit_returned": None}
    if framework == "zray":
        import zray as fw
        from zray.train import RunConfig, ScalingConfig
        from zray.train.torch import TorchTrainer
    else:
        import ray as fw
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    marks["imported"] = time.time()
    fw.init(num_cpus=config["num_cpus"])
    marks["initialized"] = time.time()
    trainer = TorchTrainer(train_loop, train_loop_config=config,
                           scaling_config=ScalingConfig(num_workers=NUM_WORKERS),
                           run_config=RunConfig(name="train_benchmark", storage_path=storage))
    marks["fit_called"] = time.time()
    trainer.fit()
    marks["fit_returned"] = time.time()
    fw.shutdown()
    marks["shutdown"] = time.time()
    with open(config["out"], "w") as f:
        json.dump(marks, f)


def role_torchrun(config: dict) -> None:
    import torch.distributed as dist
    dist.init_process_group("gloo")
    try:
        train_loop(config)
    finally:
        dist.destroy_process_group()
    if int(os.environ["RANK"]) == 0:
        with open(config["out"], "w") as f:
            json.dump({"exited_loop": time.time()}, f)


# ---------------------------------------------------------------------------
# The driver.


def free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(framework: str, python: str, config: dict, folder: str, timeout: float) -> dict:
    """Run one training in a fresh process; return its measurements."""
    out = os.path.join(folder, f"{framework}.json")
    for stale in (out, out + ".loop"):
        if os.path.exists(stale):
            os.unlink(stale)
    config = dict(config, api=framework, out=out)
    encoded = json.dumps(config)
    script = os.path.abspath(__file__)
    env = dict(os.environ)
    if framework == "torchrun":
        command = [python, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(NUM_WORKERS), script, "--role", "torchrun",
                   "--config", encoded]
    else:
        storage = os.path.join(folder, f"{framework}-results")
        command = [python, script, "--role", framework, "--config", encoded,
                   "--storage", storage]
    if framework in ("zray", "torchrun"):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    if framework == "ray":
        env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    log_path = os.path.join(folder, f"{framework}.log")
    with open(log_path, "w") as log:
        launched = time.time()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   cwd=folder, start_new_session=True)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = "timeout"
        exited = time.time()
    if framework != "torchrun":
        shutil.rmtree(os.path.join(folder, f"{framework}-results"), ignore_errors=True)
    if code != 0 or not os.path.exists(out + ".loop"):
        with open(log_path) as f:
            tail = f.read()[-3000:]
        return {"status": f"failed (exit {code})", "log_tail": tail}
    with open(out + ".loop") as f:
        loop = json.load(f)
    with open(out) as f:
        marks = json.load(f)
    stamps = loop["stamps"]
    warm = config["warmup_steps"]
    result = {
        "status": "ok",
        "startup_s": stamps[0] - launched,
        "step_ms": (stamps[-1] - stamps[warm - 1]) / (len(stamps) - warm) * 1e3,
        "total_s": exited - launched,
        "loop_entered_s": loop["loop_entered"] - launched,
        "ready_s": loop["ready"] - launched,
        "first_step_s": stamps[0] - loop["ready"],
        "final_loss": loop["final_loss"],
        # rank 0's process, per steady-state step
        **{f"{key}_per_step": (loop["usage"][1][key] - loop["usage"][0][key]) /
           (len(stamps) - warm) for key in loop["usage"][0]},
        "step_median_ms": statistics.median(
            b - a for a, b in zip(stamps[warm - 1:], stamps[warm:])) * 1e3,
        "torch_threads": loop["torch_threads"],
        "interop_threads": loop["interop_threads"],
        "env": loop["env"],
    }
    if framework != "torchrun":
        result["fit_to_first_step_s"] = stamps[0] - marks["fit_called"]
        result["import_s"] = marks["imported"] - launched
        result["init_s"] = marks["initialized"] - marks["imported"]
        result["fit_s"] = marks["fit_returned"] - marks["fit_called"]
    return result


def run_collective(runs: int, timeout: float) -> dict:
    folder = tempfile.mkdtemp(prefix="train-bench-col-")
    out = os.path.join(folder, "collective.json")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    try:
        completed = subprocess.run(
            [sys.executable, os.path.join(REPO, "tools", "collective_benchmark.py"),
             "--mb", "100", "--runs", str(runs), "--json", out],
            capture_output=True, text=True, env=env, timeout=timeout)
        if completed.returncode != 0 or not os.path.exists(out):
            return {"status": f"failed (exit {completed.returncode})",
                    "log_tail": (completed.stdout + completed.stderr)[-3000:]}
        with open(out) as f:
            return dict(json.load(f), status="ok")
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


METRICS = (("startup_s", "launch->1st step (s)", "{:.2f}"),
           ("fit_to_first_step_s", "fit()->1st step (s)", "{:.2f}"),
           ("step_ms", "step (ms)", "{:.1f}"),
           ("cpu_ms_per_step", "rank-0 CPU/step (ms)", "{:.1f}"),
           ("total_s", "total (s)", "{:.2f}"),
           ("final_loss", "final loss", "{:.4f}"),
           ("torch_threads", "torch threads", "{:.0f}"))


def median_of(samples: list, key: str):
    values = [s[key] for s in samples if s.get("status") == "ok" and key in s]
    return statistics.median(values) if values else None


def print_table(frameworks, samples, medians) -> None:
    print()
    widths = [len(label) + 2 for _, label, _ in METRICS]
    header = f"{'framework':<10}" + "".join(
        f"{label:>{width}}" for (_, label, _), width in zip(METRICS, widths)) + f"{'ok runs':>9}"
    print(header)
    print("-" * len(header))
    for framework in frameworks:
        cells = []
        for (key, _, form), width in zip(METRICS, widths):
            value = medians[framework].get(key)
            cells.append(f"{(form.format(value) if value is not None else '-'):>{width}}")
        ok = sum(1 for s in samples[framework] if s.get("status") == "ok")
        print(f"{framework:<10}" + "".join(cells) + f"{ok:>5}/{len(samples[framework])}")


def ratios(medians: dict) -> dict:
    out = {}
    zray, torchrun, ray = (medians.get(f, {}) for f in ("zray", "torchrun", "ray"))
    if zray.get("step_ms") and torchrun.get("step_ms"):
        out["step_zray_over_torchrun"] = zray["step_ms"] / torchrun["step_ms"]
    if zray.get("startup_s") and ray.get("startup_s"):
        out["startup_ray_over_zray"] = ray["startup_s"] / zray["startup_s"]
    if zray.get("startup_s") and torchrun.get("startup_s"):
        out["startup_zray_over_torchrun"] = zray["startup_s"] / torchrun["startup_s"]
    if zray.get("step_ms") and ray.get("step_ms"):
        out["step_zray_over_ray"] = zray["step_ms"] / ray["step_ms"]
    return out


def paired_ratios(samples: dict) -> dict:
    """Medians of the per-round ratios (each round runs the frameworks back to
    back, so a ratio within a round sees less of the machine's drift)."""
    out = {}
    for name, key, over, under in (
            ("paired_step_zray_over_torchrun", "step_ms", "zray", "torchrun"),
            ("paired_cpu_step_zray_over_torchrun", "cpu_ms_per_step", "zray", "torchrun"),
            ("paired_startup_ray_over_zray", "startup_s", "ray", "zray")):
        pairs = [a[key] / b[key] for a, b in zip(samples.get(over, []), samples.get(under, []))
                 if a.get("status") == "ok" and b.get("status") == "ok"]
        if pairs:
            out[name] = statistics.median(pairs)
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="zray TorchTrainer vs torchrun vs Ray Train",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs per framework (default 3)")
    parser.add_argument("--compare", default="", help="'ray' to add Ray Train")
    parser.add_argument("--python-for-peer", action="append", default=[],
                        metavar="ray=PYTHON", help="interpreter for Ray Train")
    parser.add_argument("--ray-python", help="same as --python-for-peer ray=PYTHON")
    parser.add_argument("--json", dest="json_path", help="write all results here")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup-steps", type=int, default=20,
                        help="steps left out of the steady-state step time (default 20)")
    parser.add_argument("--batch", type=int, default=128, help="per worker (default 128)")
    parser.add_argument("--input-dim", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=2, help="hidden layers (default 2)")
    parser.add_argument("--report-every", type=int, default=0,
                        help="under the trainers, train.report every N steps besides "
                             "the one after the last step (default 0: only that one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-cpus", type=int, default=4,
                        help="logical CPUs zray.init / ray.init are given (default 4: "
                             "Ray Train's coordinator takes one besides the 2 workers)")
    parser.add_argument("--collective-runs", type=int, default=5)
    parser.add_argument("--no-collective", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke check: small sizes")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds per launched process (default 300)")
    parser.add_argument("--role", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.quick:
        options.steps, options.warmup_steps, options.runs = 30, 5, 1
        options.hidden, options.collective_runs = 256, 2
    if options.steps <= options.warmup_steps or options.warmup_steps < 1:
        parser.error("need 1 <= --warmup-steps < --steps")
    return options, parser


def peer_python(options) -> str:
    python = options.ray_python or sys.executable
    for item in options.python_for_peer:
        for pair in item.split(","):
            peer, sep, value = pair.partition("=")
            if not sep or peer != "ray":
                raise SystemExit(f"--python-for-peer expects ray=PYTHON, got {pair!r}")
            python = value
    return python


def main(argv=None) -> int:
    options, parser = parse_args(argv)
    if options.role:
        config = json.loads(options.config)
        if options.role == "torchrun":
            role_torchrun(config)
        else:
            role_trainer(options.role, config, options.storage)
        return 0
    peers = [p.strip() for p in options.compare.split(",") if p.strip()]
    if any(p != "ray" for p in peers):
        parser.error("--compare takes 'ray'")
    frameworks = ["torchrun", "zray"] + peers
    pythons = {"torchrun": sys.executable, "zray": sys.executable,
               "ray": peer_python(options)}
    config = {"steps": options.steps, "warmup_steps": options.warmup_steps,
              "batch": options.batch, "input_dim": options.input_dim,
              "hidden": options.hidden, "layers": options.layers, "classes": 10,
              "lr": 0.01, "seed": options.seed, "distinct_batches": 8,
              "report_every": options.report_every, "num_cpus": options.num_cpus}
    folder = tempfile.mkdtemp(prefix="train-bench-")
    samples = {f: [] for f in frameworks}
    started = time.time()
    try:
        for run in range(options.runs):
            for framework in frameworks:
                result = launch(framework, pythons[framework], config, folder,
                                options.timeout)
                samples[framework].append(result)
                brief = (f"startup {result['startup_s']:.2f} s, step "
                         f"{result['step_ms']:.1f} ms, total {result['total_s']:.1f} s"
                         if result["status"] == "ok" else result["status"])
                print(f"run {run + 1}/{options.runs} {framework:<9} {brief}", flush=True)
                if result["status"] != "ok":
                    print(result.get("log_tail", ""), file=sys.stderr)
        collective = None
        if not options.no_collective:
            collective = run_collective(options.collective_runs, options.timeout)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for framework in frameworks:
        for sample in samples[framework]:
            if sample.get("status") == "ok":
                sample["cpu_ms_per_step"] = sample["cpu_s_per_step"] * 1e3
    keys = [k for k, _, _ in METRICS] + ["step_median_ms", "minflt_per_step",
                                         "nvcsw_per_step", "nivcsw_per_step",
                                         "loop_entered_s", "ready_s", "first_step_s",
                                         "import_s", "init_s", "fit_s"]
    medians = {f: {k: median_of(samples[f], k) for k in keys} for f in frameworks}
    print_table(frameworks, samples, medians)
    found = ratios(medians)
    found.update(paired_ratios(samples))
    print()
    if "step_zray_over_torchrun" in found:
        print(f"step time zray / torchrun: {found['step_zray_over_torchrun']:.3f} "
              f"(target <= {TARGET_STEP_RATIO})")
    if "startup_ray_over_zray" in found:
        print(f"start-up Ray Train / zray: {found['startup_ray_over_zray']:.2f} "
              f"(target >= {TARGET_STARTUP_RATIO})")
    for name, label in (("paired_step_zray_over_torchrun", "step time zray / torchrun"),
                        ("paired_cpu_step_zray_over_torchrun",
                         "rank-0 CPU per step zray / torchrun"),
                        ("paired_startup_ray_over_zray", "start-up Ray Train / zray")):
        if name in found:
            print(f"  median of per-round ratios, {label}: {found[name]:.3f}")
    if "startup_zray_over_torchrun" in found:
        print(f"start-up zray / torchrun:  {found['startup_zray_over_torchrun']:.2f}")
    if collective is not None:
        if collective.get("status") == "ok":
            print(f"allreduce of {collective['mb']} MiB over zray's zmq collective "
                  f"backend, 2 ranks: {collective['allreduce_gbs']:.2f} GB/s bus bandwidth; "
                  f"raw pyzmq send {collective['raw_gbs']:.2f} GB/s; ratio "
                  f"{collective['ratio']:.2f} (target >= {TARGET_COLLECTIVE_RATIO})")
        else:
            print(f"collective: {collective.get('status')}\n{collective.get('log_tail', '')}")
    print(f"medians of {options.runs} run(s); wall time of the benchmark "
          f"{time.time() - started:.0f} s")
    if options.json_path:
        meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                "host": platform.node(), "cpus": os.cpu_count(),
                "python": {f: pythons[f] for f in frameworks},
                "argv": sys.argv[1:], "config": config}
        with open(options.json_path, "w") as f:
            json.dump({"meta": meta, "samples": samples, "medians": medians,
                       "ratios": found, "collective": collective}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
