"""A Dask scheduler that runs a task graph as zray tasks, as Ray's
``ray.util.dask.ray_dask_get`` does::

    import dask.array as da
    from zray.util.dask import zray_dask_get
    x = da.ones((1000, 1000), chunks=100).sum()
    x.compute(scheduler=zray_dask_get)        # or dask.config.set(scheduler=...)

Every key the requested keys depend on becomes one zray task whose arguments
are the refs of its dependencies, so intermediate results stay in the object
store (and move between nodes as any task argument does); only the requested
keys' values come back to the caller.  ``zray.init()`` runs first if no
cluster is up.  Needs dask (``pip install dask``).
"""

from __future__ import annotations

from collections.abc import Mapping

import zray


@zray.remote
def _run_node(node, dependency_keys, *values):
    """Compute one graph node from its dependencies' values."""
    return node(dict(zip(dependency_keys, values)))


def _flatten(keys) -> list:
    if isinstance(keys, list):
        return [k for sub in keys for k in _flatten(sub)]
    return [keys]


def _pack(keys, values: dict):
    if isinstance(keys, list):
        return [_pack(k, values) for k in keys]
    return values[keys]


def _order(graph: dict, wanted: list) -> list:
    """The keys ``wanted`` needs, each after its dependencies (depth first,
    without recursion: graphs can be deep)."""
    order, done, stack = [], set(), [(key, False) for key in reversed(wanted)]
    while stack:
        key, expanded = stack.pop()
        if key in done:
            continue
        if expanded:
            done.add(key)
            order.append(key)
            continue
        if key not in graph:
            raise KeyError(f"dask graph has no key {key!r} (asked for, or a dependency)")
        stack.append((key, True))
        stack.extend((dep, False) for dep in graph[key].dependencies if dep not in done)
    return order


def zray_dask_get(dsk, keys, ray_remote_args: dict | None = None, **kwargs):
    """Compute ``keys`` of the dask graph ``dsk`` on zray (a Dask ``get``).
    ``ray_remote_args``: options for every task (``num_cpus``...); other
    keyword arguments dask passes to schedulers are accepted and ignored."""
    from dask._task_spec import convert_legacy_graph
    if not zray.is_initialized():
        zray.init()
    graph = convert_legacy_graph(dict(dsk) if isinstance(dsk, Mapping)
                                 else dict(dsk.__dask_graph__()))
    task = _run_node.options(**ray_remote_args) if ray_remote_args else _run_node
    wanted = _flatten(keys)
    refs: dict = {}
    for key in _order(graph, wanted):
        dependencies = list(graph[key].dependencies)
        refs[key] = task.remote(graph[key], dependencies, *[refs[d] for d in dependencies])
    values = dict(zip(wanted, zray.get([refs[k] for k in wanted])))
    return _pack(keys, values)


ray_dask_get = zray_dask_get
