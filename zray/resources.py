"""Resource rules shared by every role: what fits, what a running task holds,
and which tasks a leased worker may run.

Head (placement), node (admission) and client (direct dispatch to a granted
worker) must agree on these, so they live here once.
"""

from __future__ import annotations

#: Slack for float sums of fractional resources (0.1 + 0.2 fits in 0.3).
EPSILON = 1e-9

#: The request of the tasks a leased worker runs: one CPU, nothing else.
ONE_CPU = {"CPU": 1.0}


def fits(request: dict, available: dict) -> bool:
    """Every amount in ``request`` is within what ``available`` offers."""
    for name, amount in request.items():
        if amount > available.get(name, 0.0) + EPSILON:
            return False
    return True


def held(spec) -> dict:
    """Resources a task commits while it runs; an actor holds its ``held`` set
    for life (placement may have needed more)."""
    if spec.actor_options is not None:
        return spec.actor_options.get("held", {})
    return spec.resources


def leasable(spec) -> bool:
    """A plain 1-CPU task with nothing the node must enforce (strategy, max
    calls, actor, timeout): it may go straight to a leased worker."""
    return spec.resources == ONE_CPU and spec.strategy is None and not spec.max_calls \
        and spec.actor_id is None and not spec.timeout_s


__all__ = ["EPSILON", "ONE_CPU", "fits", "held", "leasable"]
