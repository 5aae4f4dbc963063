"""All-to-all operators as map and reduce task stages.

    input blocks ─► map task per block: split into R parts (num_returns=R)
                 ─► reduce task r: parts r of every map, combined into block r

- random_shuffle: rows go to a random part (seeded per block), each reduce
  permutes what it got (seeded per part);
- sort: a few rows sampled from each block choose R-1 range boundaries on the
  first key; part r holds the keys between boundaries r-1 and r, so the reduce
  outputs, in order, are globally sorted;
- groupby: rows are split into ranges of the first key as for sort, so each
  group lives in one reduce, which aggregates it (or calls the user's
  map_groups function on it) and returns its groups in key order: the output
  is sorted by key, as Ray's sort-based groupby's is;
- repartition (no shuffle): contiguous row ranges, one slice task per output.

Each ``run(bundles)`` runs in the driver (inside the executor) and yields the
output bundles in order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

import zray
from zray.data import _tasks, block as B
from zray.data.context import DataContext
from zray.data.plan import Bundle, row_range


def _parts_result(parts: list):
    return parts[0] if len(parts) == 1 else tuple(parts)


def _as_list(refs, count: int) -> list:
    return [refs] if count == 1 else list(refs)


def _reduce_all(reduce_task, map_refs: list, count: int, *extra) -> list:
    """Submit the R reduce tasks (part r of every map) and return bundles."""
    outputs = []
    for r in range(count):
        parts = [refs[r] for refs in map_refs]
        outputs.append(reduce_task.options(num_returns=2).remote(r, *extra, *parts))
    metas = zray.get([meta for _, meta in outputs])
    return [Bundle(ref, meta) for (ref, _), meta in zip(outputs, metas)]


# --- repartition ----------------------------------------------------------------------

def repartition(bundles: list, num_blocks: int) -> list:
    total = B.num_rows(b.meta for b in bundles)
    outputs = []
    for i in range(num_blocks):
        start, end = total * i // num_blocks, total * (i + 1) // num_blocks
        spec, refs = row_range(bundles, start, end - start)
        if not refs and bundles:
            spec, refs = [], [bundles[0].ref]
        outputs.append(_tasks.slice_concat.options(num_returns=2).remote(spec, *refs))
    metas = zray.get([meta for _, meta in outputs])
    return [Bundle(ref, meta) for (ref, _), meta in zip(outputs, metas)]


# --- random shuffle --------------------------------------------------------------------

@zray.remote
def _shuffle_map(table, count: int, seed):
    rng = np.random.default_rng(seed)
    assignment = rng.integers(0, count, table.num_rows)
    return _parts_result([table.filter(pa.array(assignment == r)) for r in range(count)])


@zray.remote
def _shuffle_reduce(r, seed, *parts):
    table = B.concat(list(parts)) if any(p.num_rows for p in parts) else parts[0]
    order = np.random.default_rng(None if seed is None else seed + 1_000_003 * (r + 1))
    table = table.take(pa.array(order.permutation(table.num_rows)))
    return table, B.metadata(table)


def random_shuffle(bundles: list, seed, num_blocks: int | None) -> list:
    if not bundles:
        return []
    count = num_blocks or len(bundles)
    maps = [_as_list(_shuffle_map.options(num_returns=count).remote(
        b.ref, count, None if seed is None else seed + i), count)
        for i, b in enumerate(bundles)]
    return _reduce_all(_shuffle_reduce, maps, count, seed)


# --- sort -----------------------------------------------------------------------------

def sort_keys(key, descending) -> list:
    keys = [key] if isinstance(key, str) else list(key)
    if isinstance(descending, bool):
        descending = [descending] * len(keys)
    if len(descending) != len(keys):
        raise ValueError(f"sort: {len(keys)} keys but {len(descending)} descending flags")
    return [(k, "descending" if d else "ascending") for k, d in zip(keys, descending)]


@zray.remote
def _sort_map(table, keys, boundaries):
    return _split_ranges(table, keys, boundaries)


def _split_ranges(table, keys, boundaries):
    first, order = keys[0]
    B.check_columns(table, [k for k, _ in keys], "sort")
    values = B.column_to_numpy(table.column(first))
    index = np.searchsorted(np.asarray(boundaries, dtype=values.dtype if len(boundaries)
                                       else None), values, side="right")
    if order == "descending":
        index = len(boundaries) - index
    return _parts_result([table.filter(pa.array(index == r))
                          for r in range(len(boundaries) + 1)])


@zray.remote
def _sort_reduce(r, keys, *parts):
    table = B.concat(list(parts)) if any(p.num_rows for p in parts) else parts[0]
    table = table.sort_by(keys)
    return table, B.metadata(table)


def _boundaries(bundles: list, column: str, count: int) -> list:
    """Up to ``count - 1`` distinct values of ``column`` that cut its sampled
    values into ``count`` ranges of about equal size."""
    context = DataContext.get_current()
    samples = zray.get([_tasks.sample_block.remote(b.ref, [column],
                                                   context.sort_sample_rows_per_block, 0)
                        for b in bundles])
    values = np.sort(B.column_to_numpy(B.concat(samples).column(column)))
    boundaries = [values[len(values) * i // count] for i in range(1, count)] if len(
        values) else []
    return sorted(set(boundaries))


def _check_keys(bundles: list, names: list, what: str) -> None:
    for bundle in bundles:
        if bundle.meta.schema is not None:
            B.check_columns(bundle.meta.schema.empty_table(), names, what)


def _range_maps(bundles: list, keys: list, count: int, combine=None) -> tuple:
    """Map tasks splitting each block (first reduced by ``combine(table, key
    names)`` when given) into key ranges: (their refs, parts)."""
    boundaries = _boundaries(bundles, keys[0][0], count)
    parts = len(boundaries) + 1
    if combine is None:
        maps = [_sort_map.options(num_returns=parts).remote(b.ref, keys, boundaries)
                for b in bundles]
    else:
        maps = [_group_map.options(num_returns=parts).remote(b.ref, keys, boundaries,
                                                             combine) for b in bundles]
    return [_as_list(refs, parts) for refs in maps], parts


def sort(bundles: list, keys: list) -> list:
    bundles = [b for b in bundles if b.meta.num_rows] or bundles[:1]
    if not bundles:
        return []
    _check_keys(bundles, [k for k, _ in keys], "sort")
    maps, parts = _range_maps(bundles, keys, len(bundles))
    return _reduce_all(_sort_reduce, maps, parts, keys)


# --- groupby --------------------------------------------------------------------------

@zray.remote
def _group_map(table, keys, boundaries, combine):
    B.check_columns(table, [k for k, _ in keys], "groupby")
    return _split_ranges(combine(table, [k for k, _ in keys]), keys, boundaries)


@zray.remote
def _group_reduce(r, keys, reducer, *parts):
    table = B.concat(list(parts)) if any(p.num_rows for p in parts) else parts[0]
    table = reducer(table, keys)
    return table, B.metadata(table)


def groupby(bundles: list, keys: list, reducer, num_partitions: int | None,
            combine=None) -> list:
    """Partition rows into ranges of the first key (boundaries sampled as for
    sort), then ``reducer(table, keys) -> table`` in each reduce task, which
    returns its groups sorted by key: the output is sorted by key, as Ray's is.
    No keys (``groupby(None)``): the whole dataset is one group, one reduce."""
    nonempty = [b for b in bundles if b.meta.num_rows] or bundles[:1]
    if not nonempty:
        return []
    _check_keys(nonempty, keys, "groupby")
    if not keys:
        return _reduce_all(_group_reduce, [[b.ref] for b in nonempty], 1, keys, reducer)
    maps, parts = _range_maps(nonempty, [(k, "ascending") for k in keys],
                              num_partitions or len(nonempty), combine)
    return _reduce_all(_group_reduce, maps, parts, keys, reducer)


def group_slices(table: pa.Table, keys: list):
    """(start, length) of each run of equal keys in a table sorted by ``keys``."""
    if table.num_rows == 0:
        return []
    columns = [B.column_to_numpy(table.column(k)) for k in keys]
    change = np.zeros(table.num_rows, dtype=bool)
    change[0] = True
    for values in columns:
        change[1:] |= values[1:] != values[:-1]
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], table.num_rows)
    return list(zip(starts.tolist(), (ends - starts).tolist()))
