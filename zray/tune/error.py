"""Tune's own errors (not a trial's: those are in ``ResultGrid.errors``)."""

from zray.exceptions import RayError


class TuneError(RayError):
    """Tune could not run or restore the experiment."""
