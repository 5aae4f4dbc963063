"""Nested results as Tune reads them: ``"env_runners/episode_return_mean"`` names
``result["env_runners"]["episode_return_mean"]`` (RLlib's results are nested),
for metrics, stop criteria, schedulers and ``ResultGrid``."""

from __future__ import annotations

#: Keys never flattened (the trial's config is not a metric).
_KEEP = ("config",)


def flatten_dict(nested: dict, delimiter: str = "/", prefix: str = "") -> dict:
    flat = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in _KEEP:
            flat.update(flatten_dict(value, delimiter, f"{name}{delimiter}"))
        else:
            flat[name] = value
    return flat


def with_flat_keys(result: dict) -> dict:
    """``result`` plus an ``a/b`` key for every leaf under a nested dict."""
    if not any(isinstance(v, dict) and k not in _KEEP for k, v in result.items()):
        return result
    out = dict(result)
    for key, value in result.items():
        if isinstance(value, dict) and value and key not in _KEEP:
            for name, leaf in flatten_dict(value, prefix=f"{key}/").items():
                out.setdefault(name, leaf)
    return out
