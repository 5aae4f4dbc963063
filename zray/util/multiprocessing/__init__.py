"""``multiprocessing.Pool``'s API on zray actors: ``from zray.util.multiprocessing import Pool``."""

from zray.util.multiprocessing.pool import (AsyncResult, IMapIterator,
                                            IMapUnorderedIterator, Pool, TimeoutError)

__all__ = ["AsyncResult", "IMapIterator", "IMapUnorderedIterator", "Pool", "TimeoutError"]
