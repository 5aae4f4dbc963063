"""The driver's loop: carries out the controller's commands on runner actors
and feeds their outcomes back to it.

    controller ──START/CONTINUE/STOP/PAUSE/DELETE──► executor ──calls──► runner actors
         ▲                                               │
         └──── on_results / on_error / on_paused ◄── zray.wait on the calls' refs

One runner actor per running trial, pooled by resources and reused for the
next trial (``TuneConfig(reuse_actors=False)`` makes a fresh one per trial).
A stopped trial's runner goes back to the pool as soon as its stop call is
sent: an actor runs its calls in order, so the next trial's start follows the
stop without a round trip in between.  A runner whose stop turns out unclean
(the trial did not reach a report within the grace time) is killed when
idle, or after the trial it took meanwhile ends; that trial's function
thread stays bound to its own session, so the straggler cannot report into it.
In streaming mode (FIFO scheduling, no stopper that needs the driver) a trial
runs ahead and its results come back in batches; in step mode every result
waits for the controller's decision.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import time

import zray
from zray.exceptions import RayActorError, RayTaskError
import zray.tune._controller as ctl
from zray.tune._runner import TrialRunner
from zray.tune._storage import ExperimentStorage
from zray.tune.error import TuneError

log = logging.getLogger("zray.tune")

_RemoteRunner = zray.remote(TrialRunner)

#: Longest the loop sleeps in wait before checking the time budget and the table.
WAKE_S = 0.5


class Executor:
    def __init__(self, controller: ctl.TuneController, storage: ExperimentStorage,
                 trainable, settings: dict, progress=None):
        self.controller, self.storage, self.trainable = controller, storage, trainable
        self.settings = settings          # step_mode, batch_s, stop, checkpoint_*, ...
        self.progress = progress
        self.free: dict = collections.defaultdict(list)   # options key -> [runner]
        self.busy: dict = {}              # trial id -> (runner, options key)
        self.calls: dict = {}             # ref -> ("trial", trial id) | ("stop", runner, key)
        self.queue: collections.deque = collections.deque()
        self.tainted: set = set()         # runners to kill once their current trial ends

    def run(self) -> None:
        callbacks = self.controller.callbacks
        self.queue.extend(self.controller.start(time.monotonic()))
        try:
            while True:
                callbacks.iteration += 1
                callbacks.call("on_step_begin")
                # journal first: what finished is on disk before new work starts
                self.storage.journal(self.controller.trials, self.controller.search_alg)
                self._drain()
                if self.progress is not None:
                    self.progress.update(self.controller)
                if self.controller.is_finished() and not self._trial_calls():
                    break
                if not self.calls:
                    self._idle()
                else:
                    for ref in self._ready():
                        self._outcome(ref)
                    self.queue.extend(self.controller.step(time.monotonic()))
                callbacks.call("on_step_end")
        finally:
            self._shutdown()

    # -- waiting ---------------------------------------------------------------------
    def _trial_calls(self) -> bool:
        return any(kind[0] == "trial" for kind in self.calls.values())

    def _ready(self) -> list:
        refs = list(self.calls)
        ready, rest = zray.wait(refs, num_returns=1, timeout=WAKE_S)
        if ready and rest:
            more, _ = zray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return ready

    def _idle(self) -> None:
        """Nothing is running: either a trial is waiting for resources it can
        never get, or the search algorithm has nothing yet."""
        commands = self.controller.step(time.monotonic())
        if commands:
            self.queue.extend(commands)
            return
        waiting = [t for t in self.controller.get_trials() if t.status.value == "PENDING"]
        if waiting:
            raise TuneError(f"trial {waiting[0]} needs {waiting[0].resources} but the "
                            f"cluster has {self.controller.config.capacity}: give the "
                            f"trainable fewer resources (tune.with_resources) or start "
                            f"zray with more (zray.init(num_cpus=...))")
        time.sleep(0.01)

    # -- commands -------------------------------------------------------------------
    def _drain(self) -> None:
        handlers = {ctl.START: self._start, ctl.CONTINUE: self._continue,
                    ctl.STOP: self._stop, ctl.PAUSE: self._pause, ctl.DELETE: self._delete}
        while self.queue:
            command = self.queue.popleft()
            handlers[command.kind](command)

    def _start(self, command) -> None:
        trial = command.trial
        first = trial.local_path is None
        if first:
            trial.local_path = self.storage.trial_dir(trial)
            self.storage.write_params(trial)
        self._adopt_checkpoint(trial)
        key, options = self.settings["actor_options"](trial)
        runner = self._free_runner(key) or \
            _RemoteRunner.options(**options).remote(self.trainable)
        spec = {"trial_id": trial.trial_id, "trial_name": str(trial),
                "trial_dir": trial.local_path, "config": trial.config,
                "experiment_name": os.path.basename(self.storage.path),
                "resources": trial.resources,
                "checkpoint_path": trial.checkpoint.path if trial.checkpoint else None,
                "restore_point": trial.restore_point,
                "next_checkpoint_index": trial.next_checkpoint_index,
                "step_mode": self.settings["step_mode"], "batch_s": self.settings["batch_s"],
                "count": command.count,
                "stop": self.settings["stop"],
                "checkpoint_frequency": self.settings["checkpoint_frequency"],
                "checkpoint_at_end": self.settings["checkpoint_at_end"]}
        self.busy[trial.trial_id] = (runner, key)
        self.calls[runner.start.remote(spec)] = ("trial", trial.trial_id)

    def _free_runner(self, key):
        """A runner to reuse.  Before a new one is made, runners still stopping
        are waited for and idle ones of other shapes let go: they hold the
        resources the new one needs (else it could wait for them forever)."""
        if not self.free[key]:
            for ref, kind in list(self.calls.items()):
                if kind[0] == "stop":
                    self._outcome(ref)
        if self.free[key]:
            return self.free[key].pop()
        for other, pool in self.free.items():
            while other != key and pool:
                zray.kill(pool.pop())
        return None

    def _adopt_checkpoint(self, trial) -> None:
        """A checkpoint from another trial (PBT) is copied into this trial's
        directory, so the donor may drop its own."""
        checkpoint = trial.checkpoint
        if checkpoint is None or os.path.dirname(checkpoint.path) == trial.local_path:
            return
        target = os.path.join(trial.local_path,
                              f"checkpoint_{trial.next_checkpoint_index:06d}")
        shutil.copytree(checkpoint.path, target, dirs_exist_ok=True)
        trial.next_checkpoint_index += 1
        trial.checkpoint = type(checkpoint)(target)
        trial.checkpoints.append((trial.checkpoint, dict(trial.last_result)))

    def _continue(self, command) -> None:
        runner, _ = self.busy[command.trial.trial_id]
        self.calls[runner.resume.remote(command.save, command.count)] = \
            ("trial", command.trial.trial_id)

    def _stop(self, command) -> None:
        held = self.busy.pop(command.trial.trial_id, None)
        if held is None:
            return                          # its runner already finished and was freed
        runner, key = held
        self._forget_calls_of(command.trial.trial_id)
        self.calls[runner.stop.remote(False)] = ("stop", runner, key)
        if self.settings["reuse_actors"]:
            self.free[key].append(runner)     # its next start queues behind the stop

    def _pause(self, command) -> None:
        trial = command.trial
        runner, key = self.busy.pop(trial.trial_id)
        self._forget_calls_of(trial.trial_id)
        try:
            stopped = zray.get(runner.stop.remote(command.save))
        except (RayActorError, RayTaskError) as exc:
            log.warning("pausing %s failed (%s); it resumes from its last checkpoint",
                        trial, exc)
            stopped = {"checkpoint": None, "clean": False}
        self._release(runner, key, stopped["clean"])
        self.queue.extend(self.controller.on_paused(trial.trial_id, stopped["checkpoint"],
                                                    time.monotonic()))

    def _delete(self, command) -> None:
        shutil.rmtree(command.path, ignore_errors=True)

    def _forget_calls_of(self, trial_id: str) -> None:
        for ref, kind in list(self.calls.items()):
            if kind == ("trial", trial_id):
                del self.calls[ref]

    # -- outcomes -----------------------------------------------------------------
    def _outcome(self, ref) -> None:
        kind = self.calls.pop(ref, None)
        if kind is None:
            return
        if kind[0] == "stop":
            self._stopped(ref, kind[1], kind[2])
            return
        trial_id = kind[1]
        trial = self.controller.get_trial(trial_id)
        now = time.monotonic()
        try:
            outcome = zray.get(ref)
        except RayActorError as exc:          # the runner died: never reuse it
            self.busy.pop(trial_id, None)
            self.queue.extend(self.controller.on_error(trial_id, exc, now))
            return
        except RayTaskError as exc:           # the trial raised: its runner is fine
            runner, key = self.busy.pop(trial_id)
            self._release(runner, key, True)
            self.queue.extend(self.controller.on_error(trial_id, exc, now))
            return
        before = len(trial.history)
        if outcome["done"]:
            runner, key = self.busy.pop(trial_id)
            self._release(runner, key, True)
        self.queue.extend(self.controller.on_results(trial_id, outcome["results"],
                                                     outcome["done"], now,
                                                     outcome.get("saved")))
        if len(trial.history) > before:
            self.storage.append_results(trial, trial.history[before:])

    def _stopped(self, ref, runner, key) -> None:
        try:
            clean = zray.get(ref)["clean"]
        except (RayActorError, RayTaskError) as exc:
            log.warning("a trial runner failed while stopping (%s)", exc)
            clean = False
        if not self.settings["reuse_actors"]:
            zray.kill(runner)
        elif not clean:
            if runner in self.free[key]:          # idle: go now
                self.free[key].remove(runner)
                zray.kill(runner)
            else:                                 # took a trial meanwhile: after it
                self.tainted.add(runner)

    def _release(self, runner, key, clean: bool) -> None:
        if clean and self.settings["reuse_actors"] and runner not in self.tainted:
            self.free[key].append(runner)
        else:
            self.tainted.discard(runner)
            zray.kill(runner)

    def _shutdown(self) -> None:
        runners = [runner for runner, _ in self.busy.values()]
        runners += [kind[1] for kind in self.calls.values() if kind[0] == "stop"]
        for pool in self.free.values():
            runners += pool
        for runner in {id(r): r for r in runners}.values():
            try:
                zray.kill(runner)
            except Exception as exc:      # the cluster may be going away too
                log.debug("killing a trial runner: %s", exc)
        self.busy, self.calls, self.free = {}, {}, collections.defaultdict(list)
        self.storage.journal(self.controller.trials, self.controller.search_alg)
        self.storage.write_summary(self.controller.get_trials())
        self.storage.close()
