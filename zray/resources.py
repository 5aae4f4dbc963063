"""Resource rules shared by every role: what fits, what a running task holds,
and which tasks a leased worker may run.

Head (placement), node (admission) and client (direct dispatch to a granted
worker) must agree on these, so they live here once.
"""

from __future__ import annotations

from zray.runtime_env.keys import code_env_key

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
        and spec.actor_id is None and not spec.timeout_s and not code_env_key(spec.runtime_env)


def local_placeable(spec) -> bool:
    """A task a node manager may place itself when one of its own workers submits
    it (see ``Config.local_placement``): no actor, no strategy (so no placement
    group, node affinity or SPREAD), no GPUs and no placement group bundle
    resources, no ObjectRef arguments at all (nothing to fetch or wait for), a
    plain return count (not a generator), no runtime_env, timeout_s or max_calls.
    Everything else goes to the head as before."""
    if spec.actor_id is not None or spec.strategy is not None or spec.dep_ids \
            or spec.nested_ids or spec.num_returns < 0 or spec.runtime_env \
            or spec.timeout_s or spec.max_calls:
        return False
    for name in spec.resources:
        if name == "GPU" or "_group_" in name:
            return False
    return True


# --- placement groups ------------------------------------------------------------------
#
# A reserved bundle becomes resources of its own on its node, named after the
# group, as in Ray: ``CPU_group_<i>_<pg>`` for bundle i and ``CPU_group_<pg>`` for
# "any bundle of the group on this node", plus ``bundle_group_[<i>_]<pg>`` markers
# so that a task asking for nothing still lands on the bundle's node.  A task in
# the group asks for the renamed resources, so the head's placement and the
# node's admission need no rule of their own for bundles.

#: What each reserved bundle adds of its marker resource, and what a task takes.
BUNDLE_MARKER_TOTAL = 1000.0
BUNDLE_MARKER_TAKE = 0.001


def bundle_resources(pg_hex: str, index: int, bundle: dict) -> dict:
    """The resources a reserved bundle adds to its node."""
    added = {}
    for name, amount in bundle.items():
        if amount:
            added[f"{name}_group_{index}_{pg_hex}"] = float(amount)
            added[f"{name}_group_{pg_hex}"] = float(amount)
    added[f"bundle_group_{index}_{pg_hex}"] = BUNDLE_MARKER_TOTAL
    added[f"bundle_group_{pg_hex}"] = BUNDLE_MARKER_TOTAL
    return added


def in_bundle(request: dict, pg_hex: str, index: int) -> dict:
    """``request`` as a task in bundle ``index`` (-1: any bundle) asks for it."""
    renamed = {}
    for name, amount in request.items():
        if amount:
            renamed[f"{name}_group_{pg_hex}"] = float(amount)
            if index >= 0:
                renamed[f"{name}_group_{index}_{pg_hex}"] = float(amount)
    renamed[f"bundle_group_{pg_hex}"] = BUNDLE_MARKER_TAKE
    if index >= 0:
        renamed[f"bundle_group_{index}_{pg_hex}"] = BUNDLE_MARKER_TAKE
    return renamed


def base_amount(resources: dict, name: str) -> float:
    """How much of ``name`` (e.g. "GPU") a request holds, inside a bundle or not:
    a bundle's request counts through its "any bundle" name."""
    amount = resources.get(name, 0.0)
    if len(resources) < 2:      # a request inside a bundle has its marker too
        return amount
    prefix = f"{name}_group_"
    for key, value in resources.items():
        if key.startswith(prefix) and "_" not in key[len(prefix):]:
            amount += value
    return amount


def add_resources(total: dict, available: dict, added: dict, sign: float) -> None:
    """Add (sign 1) or take away (sign -1) a bundle's renamed resources; a name
    whose total comes to nothing is dropped from both tables."""
    for name, amount in added.items():
        left = total.get(name, 0.0) + sign * amount
        if left <= EPSILON:
            total.pop(name, None)
            available.pop(name, None)
        else:
            total[name] = left
            available[name] = available.get(name, 0.0) + sign * amount


__all__ = ["EPSILON", "ONE_CPU", "fits", "held", "leasable", "local_placeable", "bundle_resources",
           "in_bundle", "base_amount", "add_resources", "BUNDLE_MARKER_TOTAL",
           "BUNDLE_MARKER_TAKE"]
