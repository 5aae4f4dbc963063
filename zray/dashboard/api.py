"""The dashboard's JSON API: one GET handler per resource, read-only.

    GET /api/cluster                 overview numbers (nodes, resources, task/actor counts)
    GET /api/history                 the last minutes of usage (sampled by the dashboard)
    GET /api/nodes                   zray.util.state.list_nodes (+ ResourcesAvailable)
    GET /api/tasks?state=&name=&limit=   list_tasks(detail=True), newest first
    GET /api/tasks/counts            attempts by state (cheap: no row per task)
    GET /api/tasks/summary           summarize_tasks (every row: costly on a long history)
    GET /api/tasks/{task_id}         get_task (every field, the traceback of a failure)
    GET /api/actors                  list_actors(detail=True)
    GET /api/placement_groups        list_placement_groups
    GET /api/objects                 summarize_objects
    GET /api/logs?node_id=&pid=&since=&tail=   a worker's output kept at the head
    GET /api/logs/sources            workers with output kept
    GET /api/timeline[?download=1]   zray.timeline()'s Chrome trace events
    GET /api/metrics                 the head's Prometheus metrics, parsed
    GET /metrics                     the same, as Prometheus text

Errors come back as ``{"error": text}`` with status 400 (bad parameters), 404
(no such task) or 502 (the head did not answer).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time

from aiohttp import web

from zray.dashboard.reader import parse_metrics

MAX_LIMIT = 10_000


def _json(value, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(value, default=str), status=status,
                        content_type="application/json")


def _int(request, name: str, default, low=None, high=None):
    raw = request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name} must be an integer"}),
                                 content_type="application/json") from None
    if low is not None:
        value = max(low, value)
    return min(high, value) if high is not None else value


class Api:
    """Handlers over a ``StateReader``; blocking reads run in ``executor``."""

    def __init__(self, reader, sampler, executor):
        self.reader = reader
        self.sampler = sampler
        self.executor = executor

    async def _run(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor,
                                              functools.partial(fn, *args, **kwargs))
        except (ConnectionError, RuntimeError) as exc:
            raise web.HTTPBadGateway(text=json.dumps({"error": str(exc)}),
                                     content_type="application/json") from None

    def routes(self) -> list:
        get = web.get
        return [get("/api/cluster", self.cluster), get("/api/history", self.history),
                get("/api/nodes", self.nodes), get("/api/tasks", self.tasks),
                get("/api/tasks/summary", self.task_summary),
                get("/api/tasks/counts", self.task_counts),
                get("/api/tasks/{task_id}", self.task), get("/api/actors", self.actors),
                get("/api/placement_groups", self.placement_groups),
                get("/api/objects", self.objects), get("/api/logs", self.logs),
                get("/api/logs/sources", self.log_sources),
                get("/api/timeline", self.timeline), get("/api/metrics", self.metrics),
                get("/metrics", self.metrics_text)]

    async def cluster(self, request):
        return _json(await self._run(self.reader.cluster))

    async def history(self, request):
        return _json({"interval_s": self.sampler.interval_s,
                      "samples": self.sampler.history()})

    async def nodes(self, request):
        return _json(await self._run(self.reader.nodes))

    async def tasks(self, request):
        filters = [(key, "=", request.query[key]) for key in
                   ("state", "name", "node_id", "job_id", "actor_id", "type")
                   if request.query.get(key)]
        limit = _int(request, "limit", 1000, 1, MAX_LIMIT)
        return _json(await self._run(self.reader.tasks, filters, limit))

    async def task_summary(self, request):
        return _json(await self._run(self.reader.task_summary))

    async def task_counts(self, request):
        return _json(await self._run(self.reader.task_counts))

    async def task(self, request):
        task_id = request.match_info["task_id"]
        if not all(c in "0123456789abcdefABCDEF" for c in task_id):
            return _json({"error": "a task id is hex"}, 400)
        row = await self._run(self.reader.task, task_id)
        if row is None:
            return _json({"error": f"no task {task_id}"}, 404)
        return _json(row)

    async def actors(self, request):
        filters = [(key, "=", request.query[key]) for key in ("state", "class_name")
                   if request.query.get(key)]
        return _json(await self._run(self.reader.actors, filters,
                                     _int(request, "limit", 1000, 1, MAX_LIMIT)))

    async def placement_groups(self, request):
        return _json(await self._run(self.reader.placement_groups))

    async def objects(self, request):
        return _json(await self._run(self.reader.objects))

    async def logs(self, request):
        tail = _int(request, "tail", 1000, -1, MAX_LIMIT)
        return _json(await self._run(
            self.reader.logs, node_id=request.query.get("node_id") or None,
            pid=_int(request, "pid", None), since=_int(request, "since", 0, 0),
            tail=None if tail < 0 else tail))

    async def log_sources(self, request):
        return _json(await self._run(self.reader.log_sources))

    async def timeline(self, request):
        trace = await self._run(self.reader.timeline)
        response = _json(trace)
        if request.query.get("download"):
            name = time.strftime("timeline-%Y%m%d-%H%M%S.json")
            response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    async def metrics(self, request):
        return _json(parse_metrics(await self._run(self.reader.metrics_text)))

    async def metrics_text(self, request):
        text = await self._run(self.reader.metrics_text)
        return web.Response(text=text, content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"})


__all__ = ["Api"]
