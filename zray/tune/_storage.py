"""An experiment's directory, ``storage_path/name``:

    tuner.pkl                 param_space, TuneConfig, RunConfig, trainable name
    experiment_state.journal  appended pickles: ("trial", record) whenever a
                              trial's state moves, ("search", search algorithm)
                              whenever a trial is created; the last record wins
    experiment_state.json     a readable summary, written at the end of a run
    <trial dir>/params.json, params.pkl, result.json (one JSON line per result),
                checkpoint_000000/ ...

The journal is append-only (cheap per event, survives the driver being killed
mid-run); ``Tuner.restore`` replays it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle

import cloudpickle

from zray.train._checkpoint import Checkpoint
from zray.tune._trial import Status, Trial

log = logging.getLogger("zray.tune")

TUNER_FILE = "tuner.pkl"
JOURNAL_FILE = "experiment_state.journal"
SUMMARY_FILE = "experiment_state.json"


def _json_default(value):
    if isinstance(value, Checkpoint):
        return value.path
    try:
        return float(value)
    except (TypeError, ValueError):
        return repr(value)


def to_json(value) -> str:
    return json.dumps(value, default=_json_default)


class ExperimentStorage:
    def __init__(self, path: str):
        self.path = path
        os.makedirs(path, exist_ok=True)
        self._journal = None
        self._journaled: dict = {}          # trial id -> the state last written
        self._open: dict = {}               # trial id -> trial, until journaled finished
        self._trial_count = -1

    # -- the run's settings ---------------------------------------------------------
    def save_tuner(self, state: dict) -> None:
        tmp = os.path.join(self.path, TUNER_FILE + ".tmp")
        with open(tmp, "wb") as f:
            cloudpickle.dump(state, f)
        os.replace(tmp, os.path.join(self.path, TUNER_FILE))

    def load_tuner(self) -> dict:
        with open(os.path.join(self.path, TUNER_FILE), "rb") as f:
            return pickle.load(f)

    # -- the journal ----------------------------------------------------------------
    def _write(self, record: tuple) -> None:
        if self._journal is None:
            self._journal = open(os.path.join(self.path, JOURNAL_FILE), "ab")
        try:
            data = cloudpickle.dumps(record)
        except Exception as exc:      # an unpicklable error or config: keep its text
            log.warning("could not journal %s (%s); keeping a text form", record[0], exc)
            data = cloudpickle.dumps(_plain(record))
        self._journal.write(data)
        self._journal.flush()

    def journal(self, trials: dict, search_alg) -> None:
        """Write what moved since the last call (``trials``: id -> trial).  A
        finished trial no longer changes: it is looked at until journaled so."""
        if len(trials) != self._trial_count:
            self._trial_count = len(trials)
            for trial in trials.values():
                if trial.trial_id not in self._journaled:
                    self._record_trial(trial)
                    self._open[trial.trial_id] = trial
            self._write(("search", search_alg))
        for trial_id, trial in list(self._open.items()):
            if self._journaled.get(trial_id) != _fingerprint(trial):
                self._record_trial(trial)
            if trial.is_finished:
                del self._open[trial_id]

    def _record_trial(self, trial: Trial) -> None:
        self._journaled[trial.trial_id] = _fingerprint(trial)
        self._write(("trial", trial_record(trial)))

    def replay(self) -> tuple:
        """(trial records in creation order, the latest search algorithm)."""
        records: dict = {}
        search_alg = None
        try:
            with open(os.path.join(self.path, JOURNAL_FILE), "rb") as f:
                while True:
                    try:
                        kind, value = pickle.load(f)
                    except EOFError:
                        break
                    except Exception as exc:   # a record cut short by a killed driver
                        log.warning("experiment journal ends in a partial record (%s)",
                                    exc)
                        break
                    if kind == "trial":
                        records[value["trial_id"]] = value
                    elif kind == "search":
                        search_alg = value
        except FileNotFoundError:
            pass
        return sorted(records.values(), key=lambda r: r["index"]), search_alg

    def write_summary(self, trials: list) -> None:
        summary = {"trials": [{"trial_id": t.trial_id, "status": t.status.value,
                               "config": t.config, "last_result": t.last_result,
                               "path": t.local_path,
                               "error": repr(t.error) if t.error else None}
                              for t in trials]}
        tmp = os.path.join(self.path, SUMMARY_FILE + ".tmp")
        with open(tmp, "w") as f:
            f.write(to_json(summary))
        os.replace(tmp, os.path.join(self.path, SUMMARY_FILE))

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    # -- per-trial files --------------------------------------------------------------
    def trial_dir(self, trial: Trial) -> str:
        return os.path.join(self.path, f"{trial.trainable_name}_{trial.trial_id}")

    def write_params(self, trial: Trial) -> None:
        os.makedirs(trial.local_path, exist_ok=True)
        with open(os.path.join(trial.local_path, "params.json"), "w") as f:
            f.write(to_json(trial.config))
        try:
            with open(os.path.join(trial.local_path, "params.pkl"), "wb") as f:
                cloudpickle.dump(trial.config, f)
        except Exception as exc:
            log.warning("trial %s: config not picklable (%s)", trial, exc)

    def append_results(self, trial: Trial, results: list) -> None:
        with open(os.path.join(trial.local_path, "result.json"), "a") as f:
            f.write("".join(to_json(metrics) + "\n" for metrics, _ in results))

    def read_results(self, trial_dir: str, up_to_iteration: int | None = None) -> list:
        """A trial's results from result.json (those up to an iteration)."""
        path = os.path.join(trial_dir, "result.json")
        try:
            with open(path) as f:
                lines = [json.loads(line) for line in f if line.strip()]
        except (FileNotFoundError, ValueError):
            return []
        if up_to_iteration is not None:
            lines = [m for m in lines if m.get("training_iteration", 0) <= up_to_iteration]
            with open(path, "w") as f:
                f.write("".join(to_json(m) + "\n" for m in lines))
        return lines


def _fingerprint(trial: Trial) -> tuple:
    return (trial.status, trial.checkpoint.path if trial.checkpoint else None,
            trial.num_failures, len(trial.checkpoints))


def trial_record(trial: Trial) -> dict:
    return {"trial_id": trial.trial_id, "index": trial.index, "config": trial.config,
            "tag": trial.experiment_tag, "resources": trial.resources,
            "trainable_name": trial.trainable_name, "status": trial.status.value,
            "local_path": trial.local_path,
            "checkpoint": trial.checkpoint.path if trial.checkpoint else None,
            "checkpoints": [(c.path, m) for c, m in trial.checkpoints],
            "restore_point": trial.restore_point,
            "next_checkpoint_index": trial.next_checkpoint_index,
            "num_failures": trial.num_failures, "error": trial.error,
            "last_result": trial.last_result}


def trial_from_record(record: dict) -> Trial:
    trial = Trial(record["trial_id"], record["index"], record["config"], record["tag"],
                  record["resources"], record["trainable_name"])
    trial.status = Status(record["status"])
    trial.local_path = record["local_path"]
    trial.checkpoint = Checkpoint(record["checkpoint"]) if record["checkpoint"] else None
    trial.checkpoints = [(Checkpoint(p), m) for p, m in record["checkpoints"]]
    trial.restore_point = tuple(record["restore_point"])
    trial.next_checkpoint_index = record["next_checkpoint_index"]
    trial.num_failures = record["num_failures"]
    trial.error = record["error"]
    trial.last_result = record["last_result"]
    return trial


def _plain(record: tuple) -> tuple:
    kind, value = record
    if kind == "trial":
        value = dict(value, error=repr(value["error"]) if value["error"] else None,
                     config=json.loads(to_json(value["config"])))
    return kind, value
