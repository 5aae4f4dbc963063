"""Ray's application metrics (``ray.util.metrics``): Counter, Gauge, Histogram.

Record them in any driver, task or actor; every record goes to the head (in a
``record_metrics`` query that wants no reply, batched with the process's other
messages) and the head aggregates them per name and tags: counters add up,
gauges keep the last value set, histograms count observations per bucket.
They are served with the cluster's metrics when the head exports metrics
(``zray start --head --metrics-export-port P``, ``zray.init(_metrics_export_port=P)``),
under the name given (Ray adds a ``ray_`` prefix; zray does not).
"""

from __future__ import annotations

from zray.protocol import Msg

_NO_REPLY = -1


class Metric:
    _kind = ""

    def __init__(self, name: str, description: str = "", tag_keys=None):
        if not name or not isinstance(name, str):
            raise ValueError("Empty name is not allowed. Please provide a metric name.")
        tag_keys = tuple(tag_keys or ())
        if not all(isinstance(k, str) for k in tag_keys):
            raise TypeError(f"Tag keys must be str, got {tag_keys!r}.")
        self._name = name
        self._description = description
        self._tag_keys = tag_keys
        self._default_tags = {}
        self._boundaries = ()

    @property
    def info(self) -> dict:
        return {"name": self._name, "description": self._description,
                "tag_keys": self._tag_keys, "default_tags": dict(self._default_tags)}

    def set_default_tags(self, default_tags: dict):
        for key, value in default_tags.items():
            if key not in self._tag_keys:
                raise ValueError(f"Unrecognized tag key {key!r}; tag_keys are "
                                 f"{self._tag_keys}.")
            if not isinstance(value, str):
                raise TypeError(f"Tag values must be str, got {type(value).__name__} "
                                f"for {key!r}.")
        self._default_tags = dict(default_tags)
        return self

    def _tags(self, tags) -> dict:
        final = dict(self._default_tags)
        for key, value in (tags or {}).items():
            if key not in self._tag_keys:
                raise ValueError(f"Unrecognized tag key {key!r}; tag_keys are "
                                 f"{self._tag_keys}.")
            if not isinstance(value, str):
                raise TypeError(f"Tag values must be str, got {type(value).__name__} "
                                f"for {key!r}.")
            final[key] = value
        missing = [k for k in self._tag_keys if k not in final]
        if missing:
            raise ValueError(f"Missing value for tag key(s): {','.join(missing)}.")
        return final

    def _record(self, value, tags) -> None:
        from zray import _runtime
        runtime = _runtime.get_runtime()
        if runtime is None:
            raise RuntimeError(f"metric {self._name!r}: call zray.init() first (metrics "
                               "are aggregated at the head)")
        record = (self._name, self._kind, self._description, self._tags(tags), float(value),
                  self._boundaries)
        runtime.client.send(Msg.QUERY, (_NO_REPLY, "record_metrics", [record]))


class Counter(Metric):
    """A cumulative count: ``inc(value)`` adds ``value`` (> 0)."""
    _kind = "counter"

    def inc(self, value: float = 1.0, tags: dict | None = None) -> None:
        if value <= 0:
            raise ValueError(f"value must be >0, got {value}")
        self._record(value, tags)


class Gauge(Metric):
    """The last value ``set``."""
    _kind = "gauge"

    def set(self, value: float, tags: dict | None = None) -> None:
        if value is None:
            return
        self._record(value, tags)


class Histogram(Metric):
    """Observations counted in buckets bounded by ``boundaries``."""
    _kind = "histogram"

    def __init__(self, name: str, description: str = "", boundaries=None, tag_keys=None):
        super().__init__(name, description, tag_keys)
        if not boundaries:
            raise ValueError("boundaries argument should be provided when using the "
                             "Histogram class. e.g., Histogram(boundaries=[1.0, 2.0])")
        for i, b in enumerate(boundaries):
            if b <= 0:
                raise ValueError(f"Invalid `boundaries` argument at index {i}, "
                                 f"{list(boundaries)}. Use positive values for the "
                                 "arguments.")
        self._boundaries = tuple(float(b) for b in boundaries)

    def observe(self, value: float, tags: dict | None = None) -> None:
        self._record(value, tags)

    @property
    def info(self) -> dict:
        return dict(super().info, boundaries=list(self._boundaries))


__all__ = ["Counter", "Gauge", "Histogram", "Metric"]
