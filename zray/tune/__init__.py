"""zray.tune: hyperparameter tuning with Ray Tune's API on zray actors.

``Tuner(trainable, param_space=..., tune_config=TuneConfig(...),
run_config=RunConfig(...)).fit()`` runs one trial per config drawn from the
search space (``grid_search``, ``choice``, ``uniform``, ...), as runner actors
reused from trial to trial, with schedulers (ASHA, median stopping, PBT),
search algorithms (``BasicVariantGenerator``, ``OptunaSearch``), stop criteria
and callbacks (``tune.Callback``) seeing every reported result, and returns a
``ResultGrid``.
Inside a trial: ``tune.report(metrics, checkpoint=...)``,
``tune.get_checkpoint()``, ``tune.get_context()`` (``zray.train.report`` works
too).  See docs/tune.md.
"""

from zray.train._checkpoint import Checkpoint
from zray.train._config import CheckpointConfig, FailureConfig, RunConfig
from zray.train._result import Result
from zray.tune._result_grid import ResultGrid
from zray.tune._session import get_checkpoint, get_context, report
from zray.tune._trainable import (PlacementGroupFactory, Trainable, with_parameters,
                                  with_resources)
from zray.tune._tuner import TuneConfig, Tuner
from zray.tune.callback import Callback
from zray.tune.error import TuneError
from zray.tune.registry import register_env, register_trainable
from zray.tune.search.sample import (choice, grid_search, lograndint, loguniform,
                                     qlograndint, qloguniform, qrandint, qrandn, quniform,
                                     randint, randn, sample_from, uniform)
from zray.tune.stopper import Stopper

__all__ = ["Callback", "Checkpoint", "CheckpointConfig", "FailureConfig",
           "PlacementGroupFactory", "Result", "ResultGrid", "RunConfig", "Stopper",
           "Trainable", "TuneConfig", "TuneError", "Tuner", "choice", "get_checkpoint",
           "get_context", "grid_search", "lograndint", "loguniform", "qlograndint",
           "qloguniform", "qrandint", "qrandn", "quniform", "randint", "randn",
           "register_env", "register_trainable", "report", "sample_from", "uniform",
           "with_parameters", "with_resources"]
