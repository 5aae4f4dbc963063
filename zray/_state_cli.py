"""The CLI's state commands: ``zray list``, ``zray get``, ``zray summary``,
``zray timeline`` (Ray's names), over ``zray.util.state`` and ``zray.timeline``.

``zray.cli`` adds them to its group; they import nothing of it.
"""

from __future__ import annotations

import json

import click

address_option = click.option(
    "--address", envvar="ZRAY_ADDRESS", show_envvar=True,
    help="HOST:PORT of the head (default: the cluster started on this host).")

LISTS = {"nodes": "list_nodes", "tasks": "list_tasks", "actors": "list_actors",
         "placement-groups": "list_placement_groups", "objects": "list_objects"}

# the columns of the table format (json and yaml print every field)
TABLE_COLUMNS = {
    "nodes": ("node_id", "node_ip", "state", "resources_total", "death_reason"),
    "placement-groups": ("placement_group_id", "name", "strategy", "state"),
    "objects": ("object_id", "state", "size_bytes", "inline", "references"),
}


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def _address(address):
    return address or "auto"


def _parse_filters(pairs) -> list:
    out = []
    for pair in pairs:
        for op in ("!=", "="):
            if op in pair:
                key, value = pair.split(op, 1)
                out.append((key.strip(), op, value.strip()))
                break
        else:
            raise click.BadParameter(f"{pair!r}: write KEY=VALUE or KEY!=VALUE",
                                     param_hint="--filter")
    return out


def _emit(rows, fmt, columns=None):
    if fmt == "json":
        click.echo(json.dumps(rows, indent=1, default=str))
    elif fmt == "yaml":
        try:
            import yaml
        except ImportError:
            raise click.ClickException("--format yaml needs PyYAML (pip install pyyaml)")
        click.echo(yaml.safe_dump(json.loads(json.dumps(rows, default=str)),
                                  sort_keys=False))
    else:
        if columns and isinstance(rows, list):
            rows = [{c: r.get(c) for c in columns} for r in rows]
        click.echo(table(rows) if isinstance(rows, list) else table([rows]))


@click.command(name="list")
@click.argument("what", type=click.Choice(sorted(LISTS)))
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Keep rows whose KEY equals (=) or differs from (!=) VALUE; repeatable.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              envvar="ZRAY_LIST_LIMIT", show_envvar=True, help="Most rows to show.")
@click.option("--detail", is_flag=True, help="Every field, not only the default columns.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "yaml"]),
              default="table", show_default=True, envvar="ZRAY_LIST_FORMAT",
              show_envvar=True)
@address_option
def list_(what, filters, limit, detail, fmt, address):
    """List nodes, tasks, actors, objects or placement groups."""
    from zray.util import state
    fn = getattr(state, LISTS[what])
    kwargs = {"detail": detail} if what == "tasks" else {}
    rows = _call(fn, _address(address), filters=_parse_filters(filters), limit=limit,
                 **kwargs)
    _emit([dict(r) for r in rows], fmt, None if detail else TABLE_COLUMNS.get(what))


@click.command(name="get")
@click.argument("what", type=click.Choice(["task", "actor", "node"]))
@click.argument("id")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="json",
              show_default=True)
@address_option
def get(what, id, fmt, address):
    """One task (its latest attempt), actor or node, every field."""
    from zray.util import state
    row = _call(getattr(state, f"get_{what}"), id, _address(address))
    if row is None:
        raise click.ClickException(f"no {what} with id {id} (ids are hex; `zray list "
                                   f"{what}s` shows them)")
    _emit(dict(row), fmt)


@click.command()
@click.argument("what", type=click.Choice(["tasks", "actors", "objects"]))
@click.option("--format", "fmt", type=click.Choice(["table", "json", "yaml"]),
              default="table", show_default=True)
@address_option
def summary(what, fmt, address):
    """Counts of tasks (by function), actors (by class) or objects, by state."""
    from zray.util import state
    result = _call(getattr(state, f"summarize_{what}"), _address(address))
    if fmt != "table":
        _emit(result, fmt)
        return
    cluster = result["cluster"]
    rows = [{"name": name, **{k: v for k, v in entry.items()
                              if k not in ("state_counts",) and k != "func_or_class_name"
                              and k != "class_name"},
             "state_counts": ", ".join(f"{s}: {c}" for s, c in
                                       sorted(entry["state_counts"].items()))}
            for name, entry in cluster["summary"].items()]
    click.echo(table(rows))
    totals = {k: v for k, v in cluster.items() if k.startswith("total")}
    click.echo("\n" + ", ".join(f"{k}: {v}" for k, v in totals.items()))


@click.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the Chrome trace JSON here (default: timeline-<time>.json).")
@address_option
def timeline(output, address):
    """Task executions as a Chrome trace (open in chrome://tracing or Perfetto)."""
    import time
    from zray._timeline import timeline as build
    output = output or time.strftime("timeline-%Y%m%d-%H%M%S.json")
    _call(build, output, _address(address))
    click.echo(f"wrote {output}; open it in chrome://tracing or https://ui.perfetto.dev")


@click.command()
@click.option("--node-id", default=None, help="Only this node's workers (hex id).")
@click.option("--actor-id", default=None, help="Only this actor's worker.")
@click.option("--task-id", default=None, help="Only this task's worker, while it ran.")
@click.option("--pid", type=int, default=None, help="Only this worker process.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output (Ctrl-C ends).")
@click.option("--tail", type=int, default=1000, show_default=True,
              help="Print the last N chunks of output first (-1: all kept).")
@address_option
def logs(node_id, actor_id, task_id, pid, follow, tail, address):
    """Workers' output (what tasks and actors printed), kept at the head, from
    any node; it also went to the drivers of their jobs."""
    from zray.util import state
    address = _address(address)
    if sum(x is not None for x in (actor_id, task_id, pid)) > 1:
        raise click.UsageError("give at most one of --actor-id, --task-id, --pid")
    args = {"node_id": node_id, "pid": pid, "tail": None if tail < 0 else tail}
    if actor_id is not None:
        actor = _call(state.get_actor, actor_id, address)
        if actor is None or not actor.get("pid"):
            raise click.ClickException(f"no actor {actor_id} with a worker (`zray list "
                                       "actors` shows them)")
        args.update(pid=actor["pid"], node_id=actor.get("node_id"))
    elif task_id is not None:
        task = _call(state.get_task, task_id, address)
        if task is None or not task.get("worker_pid"):
            raise click.ClickException(f"no task {task_id} that ran on a worker the head "
                                       "knows of (`zray list tasks` shows them)")
        slack = 1.0       # the head's clock: the task's times are its view of them
        args.update(pid=task["worker_pid"], node_id=task["node_id"],
                    start=(task["start_time_ms"] or 0) / 1e3 - slack,
                    end=None if task["end_time_ms"] is None
                    else task["end_time_ms"] / 1e3 + slack)
    ask = state._asker(address)
    prefix = args["pid"] is None
    reply = _call(ask, "logs", args)
    _print_chunks(reply["chunks"], prefix)
    while follow:
        import time
        time.sleep(0.5)
        reply = _call(ask, "logs", dict(args, since=reply["next"], tail=None))
        _print_chunks(reply["chunks"], prefix)


def _print_chunks(chunks, prefix) -> None:
    for _seq, _when, node, pid, stream, text in chunks:
        err = stream == "stderr"
        if prefix:
            text = "".join(f"(pid={pid}, node={(node or '?')[:8]}) {line}"
                           for line in text.splitlines(True))
        click.echo(text, nl=not text.endswith("\n"), err=err)


def table(rows: list) -> str:
    if not rows:
        return "(none)"
    columns = list(rows[0])
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


COMMANDS = (list_, get, summary, timeline, logs)
