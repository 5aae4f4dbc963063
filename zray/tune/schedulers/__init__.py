"""Trial schedulers (``zray.tune.schedulers``), with Ray Tune's names."""

from zray.tune.schedulers.async_hyperband import ASHAScheduler, AsyncHyperBandScheduler
from zray.tune.schedulers.median_stopping_rule import MedianStoppingRule
from zray.tune.schedulers.pbt import PopulationBasedTraining
from zray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

__all__ = ["ASHAScheduler", "AsyncHyperBandScheduler", "FIFOScheduler",
           "MedianStoppingRule", "PopulationBasedTraining", "TrialScheduler"]
