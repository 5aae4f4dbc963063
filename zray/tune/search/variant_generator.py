"""Turn a ``param_space`` into concrete configs: every grid combination, each
repeated ``num_samples`` times, with random domains drawn for each variant and
``sample_from`` functions resolved last (they may read the other values).

Variants are addressed by index (sample repeat, grid position), so a generator
holds no iterator and pickles into an experiment's state for ``Tuner.restore``.
"""

from __future__ import annotations

import copy

from zray.tune.search.sample import Domain, Function, Spec


def is_grid(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "grid_search" in value


def find_unresolved(space, path=()) -> list:
    """[(path, grid-dict or Domain)] for every value still to resolve, in a
    stable order (sorted by path, as Ray sorts its grid variables)."""
    found = []
    if is_grid(space) or isinstance(space, Domain):
        return [(path, space)]
    if isinstance(space, dict):
        for key, value in space.items():
            found.extend(find_unresolved(value, path + (key,)))
    elif isinstance(space, (list, tuple)):
        for index, value in enumerate(space):
            found.extend(find_unresolved(value, path + (index,)))
    return sorted(found, key=lambda item: tuple(map(str, item[0])))


def set_path(config, path: tuple, value) -> None:
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def get_path(config, path: tuple):
    for key in path:
        config = config[key]
    return config


def _mutable(space):
    """A deep copy where tuples become lists (so values can be set in place)."""
    if isinstance(space, dict) and not is_grid(space):
        return {key: _mutable(value) for key, value in space.items()}
    if isinstance(space, tuple):
        return [_mutable(value) for value in space]
    if isinstance(space, list):
        return [_mutable(value) for value in space]
    return space


class VariantSpace:
    """The grid and the random domains of one ``param_space``."""

    def __init__(self, param_space: dict):
        if not isinstance(param_space, dict):
            raise TypeError(f"param_space must be a dict, got {type(param_space).__name__}")
        self.param_space = param_space
        unresolved = find_unresolved(param_space)
        self.grid = [(path, value["grid_search"]) for path, value in unresolved
                     if is_grid(value)]
        self.domains = [(path, value) for path, value in unresolved
                        if isinstance(value, Domain) and not value.is_function()]
        self.functions = [(path, value) for path, value in unresolved
                          if isinstance(value, Function)]
        self.grid_size = 1
        for _, values in self.grid:
            self.grid_size *= len(values)

    def grid_values(self, grid_index: int) -> list:
        """[(path, value)] of grid position ``grid_index`` (the first grid
        variable, in path order, varies fastest)."""
        chosen = []
        for path, values in self.grid:
            chosen.append((path, values[grid_index % len(values)]))
            grid_index //= len(values)
        return chosen

    def resolve(self, grid_index: int, rng, preset: dict | None = None) -> tuple:
        """(config, {path: value} of what was chosen) for one variant."""
        config = _mutable(copy.deepcopy(self.param_space))
        chosen = {}
        for path, value in self.grid_values(grid_index):
            set_path(config, path, copy.deepcopy(value))
            chosen[path] = value
        for path, domain in self.domains:
            value = _preset(preset, path)
            if value is _MISSING:
                value = domain.sample(config, random_state=rng)
            set_path(config, path, value)
            chosen[path] = value
        for path, function in self.functions:
            value = _preset(preset, path)
            if value is _MISSING:
                value = function.func(Spec(config))
            set_path(config, path, value)
            chosen[path] = value
        return config, chosen


_MISSING = object()


def _preset(preset: dict | None, path: tuple):
    if not preset:
        return _MISSING
    try:
        return get_path(preset, path)
    except (KeyError, IndexError, TypeError):
        return _MISSING


def _spec_for(config):
    from zray.tune.search.sample import _Spec
    return _Spec(config)


def format_tag(index: int, chosen: dict) -> str:
    """Ray's experiment tag: ``"3_lr=0.0010,momentum=0.9000"``."""
    parts = []
    for path, value in chosen.items():
        name = "/".join(map(str, path[-1:]))
        parts.append(f"{name}={_short(value)}")
    return f"{index}_{','.join(parts)}" if parts else str(index)


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) >= 1e-4 or value == 0 else f"{value:.4e}"
    text = str(value)
    return text if len(text) <= 20 else text[:17] + "..."
