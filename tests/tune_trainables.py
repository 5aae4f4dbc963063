"""Trainables the zray.tune tests run (importable by runner actors)."""

from __future__ import annotations

import json
import os
import tempfile
import time

import zray
from zray import tune
from zray.train import Checkpoint


def quadratic(config):
    """Reports -(x - 3)^2 + iteration noise-free, ``steps`` times."""
    for step in range(config.get("steps", 3)):
        tune.report({"score": -(config["x"] - 3) ** 2 + step * 0.01, "step": step})


def counted(config):
    """Appends a line to ``marker_dir/<id>`` per iteration it runs (to count
    iterations the scheduler let it run), reporting ``score`` = rate * iteration."""
    path = os.path.join(config["marker_dir"], f"trial-{config['rate']}")
    for step in range(config.get("steps", 10)):
        with open(path, "a") as f:
            f.write(f"{step}\n")
        tune.report({"score": config["rate"] * (step + 1)})


def concurrent(config):
    """Counts other trials running at once: a marker file while it runs."""
    directory = config["marker_dir"]
    mine = os.path.join(directory, f"running-{os.getpid()}-{time.monotonic_ns()}")
    open(mine, "w").close()
    try:
        seen = 0
        for _ in range(5):
            seen = max(seen, len([n for n in os.listdir(directory)
                                  if n.startswith("running-")]))
            time.sleep(0.02)
        with open(os.path.join(directory, "max-seen"), "a") as f:
            f.write(f"{seen}\n")
        tune.report({"seen": seen})
    finally:
        os.unlink(mine)


def fails_sometimes(config):
    tune.report({"score": config["x"]})
    if config["x"] == 2:
        raise ValueError("trial x=2 fails on purpose")
    tune.report({"score": config["x"] * 10})


def checkpointing(config):
    """Counts to ``steps``, checkpointing each step; fails once at ``fail_at``
    (a marker file remembers) and must resume from its checkpoint."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            with open(os.path.join(directory, "state.json")) as f:
                start = json.load(f)["step"] + 1
    for step in range(start, config["steps"]):
        if step == config.get("fail_at") and not os.path.exists(config["marker"]):
            open(config["marker"], "w").close()
            raise RuntimeError("failing once on purpose")
        with tempfile.TemporaryDirectory() as directory:
            with open(os.path.join(directory, "state.json"), "w") as f:
                json.dump({"step": step}, f)
            tune.report({"step": step, "start": start},
                        checkpoint=Checkpoint.from_directory(directory))


def via_train_report(config):
    """Ray 2.x style: zray.train.report inside a Tune trial."""
    from zray import train
    for step in range(2):
        train.report({"value": config["v"] + step})


def returns_dict(config):
    return {"final": config["v"] * 2}


def kills_driver_on_marker(config):
    """For the restore test: the trial with x == 3 kills the driver once."""
    with open(os.path.join(config["marker_dir"], f"ran-{config['x']}"), "a") as f:
        f.write("1\n")
    if config["x"] == 3 and not os.path.exists(os.path.join(config["marker_dir"], "killed")):
        open(os.path.join(config["marker_dir"], "killed"), "w").close()
        os.kill(config["driver_pid"], 9)
        time.sleep(30)
    tune.report({"score": config["x"]})


class Counter(tune.Trainable):
    """A class trainable: counts by ``increment``, checkpoints its count."""

    def setup(self, config, offset=0):
        self.count = offset
        self.increment = config["increment"]

    def step(self):
        self.count += self.increment
        return {"count": self.count, "score": self.count}

    def save_checkpoint(self, checkpoint_dir):
        return {"count": self.count}

    def load_checkpoint(self, checkpoint):
        self.count = checkpoint["count"]


def pbt_trainable(config):
    """Grows ``value`` by ``lr`` each step, from its checkpoint when it has one
    (so a clone continues its donor's value)."""
    value = 0.0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with open(os.path.join(checkpoint.path, "value")) as f:
            value = float(f.read())
    elif config.get("barrier_dir"):       # the population starts together
        barrier = config["barrier_dir"]
        open(os.path.join(barrier, f"started-{config['lr']}"), "w").close()
        deadline = time.monotonic() + 20
        started = lambda: sum(name.startswith("started-") for name in os.listdir(barrier))  # noqa: E731
        while started() < config["population"] and time.monotonic() < deadline:
            time.sleep(0.01)
    while True:
        time.sleep(config.get("step_s", 0))
        value += config["lr"]
        with tempfile.TemporaryDirectory() as directory:
            with open(os.path.join(directory, "value"), "w") as f:
                f.write(str(value))
            tune.report({"value": value, "lr": config["lr"]},
                        checkpoint=Checkpoint.from_directory(directory))


def uses_parameters(config, data=None):
    tune.report({"total": sum(data) * config["k"]})


def where_am_i(config):
    tune.report({"pid": os.getpid(), "id": tune.get_context().get_trial_id(),
                 "resources": tune.get_context().get_trial_resources()})


def needs_cluster(config):
    zray.get_runtime_context()
    tune.report({"ok": 1})


def forever(config):
    while True:
        time.sleep(0.05)
        tune.report({"alive": 1})


def fails_above(config):
    """Raises before reporting when x > 5.5; else reports -(x - 3)^2 twice."""
    if config["x"] > 5.5:
        raise ValueError(f"x={config['x']} is too large on purpose")
    for step in range(2):
        tune.report({"score": -(config["x"] - 3) ** 2 + step * 0.01})


def sums_array(config, data=None):
    """For with_parameters: ``data`` is a large array shared by every trial."""
    tune.report({"total": float(data.sum()) * config["k"], "size": int(data.size)})
