"""Search algorithms and search spaces (``zray.tune.search``), with Ray's names."""

from zray.tune.search.searcher import (BasicVariantGenerator, ConcurrencyLimiter,
                                       SearchGenerator, Searcher)
from zray.tune.search.sample import (Categorical, Domain, Float, Function, Integer,
                                     choice, grid_search, lograndint, loguniform,
                                     qlograndint, qloguniform, qrandint, qrandn,
                                     quniform, randint, randn, sample_from, uniform)

__all__ = ["BasicVariantGenerator", "Categorical", "ConcurrencyLimiter", "Domain", "Float",
           "Function", "Integer", "SearchGenerator", "Searcher", "choice", "grid_search",
           "lograndint", "loguniform", "qlograndint", "qloguniform", "qrandint", "qrandn",
           "quniform", "randint", "randn", "sample_from", "uniform"]
