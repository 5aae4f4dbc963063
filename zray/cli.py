"""The ``zray`` command: start, join, inspect and stop a cluster.

    zray start --head [--port 6380]            a head and a node on this host
    zray start --address HOST:PORT             a node joining that head
    zray stop [--force]                        what `zray start` started here
    zray status | zray list nodes | zray memory

Processes started here are recorded (pid and start time) in ``started.json`` in
the temp dir, so ``zray stop`` ends exactly those, by pid.  Every option also
reads an environment variable (shown by ``--help``).  Bad input ends with a
one-line error and exit status 1 or 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time

import click

from zray import _launch
from zray import _state_cli as state_cli
from zray.config import Config
from zray.exceptions import RaySystemError

DEFAULT_PORT = 6380


def fail(message: str) -> None:
    raise click.ClickException(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """zray: Ray's core API on ZeroMQ."""


# --- start ---------------------------------------------------------------------------

def parse_resources(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON ({exc}); write it like '{{\"accelerator\": 2}}'")
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            and v >= 0 for k, v in value.items()):
        raise click.BadParameter("must be a JSON object of names to non-negative numbers, "
                                 "like '{\"accelerator\": 2}'")
    for name in ("CPU", "GPU", "memory", "object_store_memory"):
        if name in value:
            raise click.BadParameter(f"set {name} with its own option, not in --resources")
    return value


@main.command()
@click.option("--head", is_flag=True, help="Start a head (and a node) on this host.")
@click.option("--address", envvar="ZRAY_ADDRESS", show_envvar=True,
              help="HOST:PORT of the head this node joins.")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT,
              envvar="ZRAY_PORT", show_envvar=True, show_default=True,
              help="TCP port of the head (with --head).")
@click.option("--node-ip-address", envvar="ZRAY_NODE_IP_ADDRESS", show_envvar=True,
              help="This host's address as other hosts reach it (default: the address "
                   "of the route to the head, or of the default route).")
@click.option("--num-cpus", type=click.FloatRange(min=0), envvar="ZRAY_NUM_CPUS",
              show_envvar=True, help="CPUs this node offers (default: all).")
@click.option("--num-gpus", type=click.FloatRange(min=0), envvar="ZRAY_NUM_GPUS",
              show_envvar=True, help="GPUs this node offers (default: 0).")
@click.option("--resources", envvar="ZRAY_RESOURCES", show_envvar=True,
              help="Custom resources as JSON, e.g. '{\"accelerator\": 2}'.")
@click.option("--object-store-memory", type=click.IntRange(min=1),
              envvar="ZRAY_OBJECT_STORE_MEMORY", show_envvar=True,
              help="Bytes of shared memory for objects (default: 30% of free memory).")
@click.option("--spill-dir", envvar="ZRAY_OBJECT_SPILLING_DIRECTORY", show_envvar=True,
              type=click.Path(file_okay=False),
              help="Folder where the node spills objects when its store is over "
                   "--object-store-memory (default: inside the session directory).")
@click.option("--temp-dir", envvar="ZRAY_TEMP_DIR", show_envvar=True,
              help="Folder for session directories and the record of started processes.")
@click.option("--block", is_flag=True, envvar="ZRAY_BLOCK", show_envvar=True,
              help="Stay in the foreground; stop everything on Ctrl-C or SIGTERM.")
@click.option("--key", "key_file", envvar="ZRAY_CLUSTER_KEY_FILE", show_envvar=True,
              type=click.Path(dir_okay=False),
              help="The cluster's key file (mode 0600). A head makes a new one unless "
                   "given; a joining node needs a copy of the head's (found by itself "
                   "when the head runs on this host).")
@click.option("--insecure", is_flag=True, envvar="ZRAY_INSECURE", show_envvar=True,
              help="No CURVE authentication or encryption: trusted networks only.")
@click.option("--bind-address", envvar="ZRAY_BIND_ADDRESS", show_envvar=True,
              default="0.0.0.0", show_default=True,
              help="Interface the head listens on (with --head): every one by default "
                   "(every TCP socket is CURVE-authenticated), so it answers on loopback "
                   "and on the address it advertises; give one address to listen there "
                   "only.")
@click.option("--metrics-export-port", type=click.IntRange(min=1, max=65535), default=None,
              envvar="ZRAY_METRICS_EXPORT_PORT", show_envvar=True,
              help="With --head: serve the cluster's and applications' metrics in "
                   "Prometheus' text format at http://127.0.0.1:PORT/metrics "
                   "(ZRAY_METRICS_EXPORT_HOST widens the interface).")
@click.option("--include-dashboard/--no-include-dashboard", default=None,
              envvar="ZRAY_INCLUDE_DASHBOARD", show_envvar=True,
              help="With --head: start the web dashboard beside the head (default: when "
                   "its extra, zray[dashboard], is installed).")
@click.option("--dashboard-host", default="127.0.0.1", show_default=True,
              envvar="ZRAY_DASHBOARD_HOST", show_envvar=True,
              help="Interface the dashboard listens on; on any but loopback it asks for "
                   "a token derived from the cluster key (printed here).")
@click.option("--dashboard-port", type=click.IntRange(0, 65535), default=None,
              envvar="ZRAY_DASHBOARD_PORT", show_envvar=True,
              help="The dashboard's port (default: 8265, or the next free one).")
def start(head, address, port, node_ip_address, num_cpus, num_gpus, resources,
          object_store_memory, spill_dir, temp_dir, block, key_file, insecure, bind_address,
          metrics_export_port, include_dashboard, dashboard_host, dashboard_port):
    """Start a head, or a node that joins one."""
    if head == bool(address):
        fail("give exactly one of --head (start a new cluster) or --address HOST:PORT "
             "(join one)")
    extra = parse_resources(resources)
    config = Config.from_env(temp_dir=temp_dir, insecure=insecure or None,
                             cluster_key_file=os.path.abspath(key_file) if key_file else None,
                             object_spilling_directory=os.path.abspath(spill_dir)
                             if spill_dir else None,
                             metrics_export_port=metrics_export_port)
    if config.insecure:
        click.echo("WARNING: --insecure: this cluster's sockets accept anyone who can reach "
                   "them, unencrypted, and run what they send. Use it only on a trusted "
                   "network.", err=True)
    elif config.cluster_key_file:
        _check_key(config.cluster_key_file)
    if head:
        started = _start_head(config, port, node_ip_address, num_cpus, num_gpus, extra,
                              object_store_memory, bind_address)
        started += _start_dashboard(config, started, include_dashboard, dashboard_host,
                                    dashboard_port)
    else:
        started = _start_worker_node(config, address, node_ip_address, num_cpus, num_gpus,
                                     extra, object_store_memory)
    _launch.record_started(config.temp_dir, [entry for entry, _ in started])
    if block:
        _block([process for _, process in started], config)


def _check_key(path: str) -> None:
    from zray.security import KeyFileError, load_key_file
    try:
        load_key_file(path)
    except KeyFileError as exc:
        fail(str(exc))


def _start_head(config, port, ip, num_cpus, num_gpus, extra, store_bytes, bind_address):
    import dataclasses
    from zray._process import route_ip
    from zray.security import KEY_FILE_NAME, create_key_file
    ip = ip or route_ip()
    _check_port_free(bind_address, port)
    session_name, session_dir = _session_dir(config)
    if not config.insecure:
        key_file = os.path.abspath(config.cluster_key_file) if config.cluster_key_file \
            else os.path.join(session_dir, KEY_FILE_NAME)
        if not config.cluster_key_file:
            create_key_file(key_file)
        config = dataclasses.replace(config, cluster_key_file=key_file)
    try:
        head, endpoint = _launch.start_tcp_head(config, session_name, session_dir, ip, port,
                                                None, bind_host=bind_address)
    except RaySystemError as exc:
        fail(str(exc))
    address = endpoint[len("tcp://"):]
    node, node_id = _start_node(config, endpoint, session_dir, ip, num_cpus, num_gpus,
                                extra, store_bytes, head=True)
    _wait_joined(endpoint, node_id, [head, node], config)
    _launch.remember_cluster_key(config.temp_dir, address,
                                 None if config.insecure else config.cluster_key_file)
    if config.cluster_key_file:
        join = f"zray start --address {address} --key /path/to/cluster.key"
        key_note = (f"  Cluster key: {config.cluster_key_file} (mode 0600). Other hosts "
                    "need a copy, kept owner-only\n  (e.g. `scp -p`); drivers elsewhere "
                    "set ZRAY_CLUSTER_KEY_FILE to it.\n\n")
    else:
        join = f"zray start --address {address} --insecure"
        key_note = "  INSECURE: no key; anyone who reaches these ports is trusted.\n\n"
    click.echo(f"zray head started at {address} (session {session_dir})\n\n{key_note}"
               f"  Add a node on another host:  {join}\n"
               f"  Connect a driver:            zray.init(address=\"{address}\")"
               f"   (\"auto\" on this host)\n"
               f"  Inspect:                     zray status --address {address}\n"
               f"  Stop what started here:      zray stop\n\n"
               f"  Hosts that join need TCP access to {address} and to the ports the "
               "nodes pick (see docs/deployment.md).")
    return [({"role": "head", "pid": head.pid, "address": address,
              "session_dir": session_dir}, head),
            ({"role": "node", "pid": node.pid, "address": address, "node_id": node_id.hex(),
              "session_dir": session_dir,
              "spill_base": config.object_spilling_directory or session_dir}, node)]


def _start_dashboard(config, started, include, host, port) -> list:
    """The dashboard beside the head just started (when asked, or installed)."""
    from zray import dashboard
    if include is False or (include is None and not dashboard.available()):
        return []
    from zray.dashboard.launch import missing_dependencies_message, start_dashboard
    if not dashboard.available():
        _stop_all([process for _, process in started], config)
        fail(missing_dependencies_message())
    entry, head = started[0]
    config = _launch.with_cluster_key(config, "tcp://" + entry["address"])   # its key
    try:
        board = start_dashboard(config, "tcp://" + entry["address"], entry["session_dir"],
                                host, port, head_pid=head.pid)
    except RaySystemError as exc:
        _stop_all([process for _, process in started], config)
        fail(str(exc))
    click.echo(f"\n  Dashboard:                   {board.url}")
    if board.token:
        click.echo(f"  Dashboard token:             {board.token}\n    (it listens on "
                   f"{board.host}: other hosts use this host's address; it asks every "
                   "request for the token; `zray dashboard-token` prints it again)")
    return [({"role": "dashboard", "pid": board.pid, "address": entry["address"],
              "url": board.url, "session_dir": entry["session_dir"]}, board.process)]


def _start_worker_node(config, address, ip, num_cpus, num_gpus, extra, store_bytes):
    from zray._admin import query
    from zray._process import route_ip
    from zray.api import head_endpoint
    try:
        endpoint = head_endpoint(address)
    except ValueError as exc:
        fail(str(exc))
    if not endpoint.startswith("tcp://"):
        fail(f"--address {address!r} must be the head's HOST:PORT")
    head_host, _, head_port = endpoint[len("tcp://"):].rpartition(":")
    try:
        socket.create_connection((head_host, int(head_port)), timeout=5.0).close()
    except OSError as exc:
        fail(f"cannot reach a zray head at {address}: {exc}")
    from zray.security import KeyFileError
    try:
        config = _launch.with_cluster_key(config, endpoint)
    except KeyFileError as exc:
        fail(str(exc))
    if config.cluster_key_file:
        _check_key(config.cluster_key_file)
    try:
        query(endpoint, "nodes", timeout_s=5.0, config=config)
    except ConnectionError as exc:
        fail(f"no answer from a zray head at {address} (a wrong key gets none): {exc}")
    if not ip:
        ip = "127.0.0.1" if head_host in ("127.0.0.1", "localhost") else route_ip(head_host)
    session_name, session_dir = _session_dir(config)
    node, node_id = _start_node(config, endpoint, session_dir, ip, num_cpus, num_gpus,
                                extra, store_bytes, head=False)
    _wait_joined(endpoint, node_id, [node], config)
    click.echo(f"zray node {node_id.hex()[:12]} at {ip} joined the head at {address}")
    return [({"role": "node", "pid": node.pid, "address": address, "node_id": node_id.hex(),
              "session_dir": session_dir,
              "spill_base": config.object_spilling_directory or session_dir}, node)]


def _start_node(config, endpoint, session_dir, ip, num_cpus, num_gpus, extra,
                store_bytes, head):
    resources = _launch.default_resources(num_cpus, num_gpus, extra,
                                          object_store_memory=store_bytes, host=ip,
                                          head=head, shm_dir=config.shm_dir)
    node_id = os.urandom(16)
    node = _launch.start_node(config, endpoint, node_id, resources, session_dir, ip, None)
    return node, node_id


def _session_dir(config):
    try:
        return _launch.make_session_dir(config)
    except (ValueError, OSError) as exc:
        fail(str(exc))


def _check_port_free(ip: str, port: int) -> None:
    if port == 0:
        return
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # as ZeroMQ binds: a port held only by TIME-WAIT connections is free
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((ip, port))
    except OSError as exc:
        fail(f"cannot listen on {ip}:{port} ({exc.strerror}); is another head running "
             "there? Pick another port with --port, or stop it with `zray stop`")
    finally:
        probe.close()


def _wait_joined(endpoint, node_id, processes, config) -> None:
    from zray._admin import query
    deadline = time.monotonic() + config.startup_timeout_s
    while True:
        for process in processes:
            if process.popen.poll() is not None:
                _stop_all(processes, config)
                fail(f"the {process.name} process exited during start-up; the end of its "
                     f"log {process.log_path}:\n{process.log_tail(8)}")
        try:
            nodes = query(endpoint, "nodes", timeout_s=2.0, config=config)
        except ConnectionError:
            nodes = []
        if any(n["NodeID"] == node_id.hex() and n["Alive"] for n in nodes):
            return
        if time.monotonic() > deadline:
            _stop_all(processes, config)
            fail(f"the node did not join the head at {endpoint} within "
                 f"{config.startup_timeout_s:g} s; see its log in "
                 f"{os.path.dirname(processes[-1].log_path)}")
        time.sleep(0.05)


def _stop_all(processes, config) -> None:
    for process in reversed(processes):
        process.stop(config.shutdown_grace_s)


def _block(processes, config) -> None:
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    click.echo("blocking; Ctrl-C stops the processes started here")
    while not stop["now"] and all(p.popen.poll() is None for p in processes):
        time.sleep(0.2)
    _stop_all(processes, config)


# --- stop ----------------------------------------------------------------------------

@main.command()
@click.option("--force", is_flag=True, envvar="ZRAY_STOP_FORCE", show_envvar=True,
              help="SIGKILL at once instead of a clean stop.")
@click.option("--grace-s", type=click.FloatRange(min=0), default=10.0, show_default=True,
              envvar="ZRAY_STOP_GRACE_S", show_envvar=True,
              help="Seconds to wait for a clean exit before SIGKILL.")
@click.option("--temp-dir", envvar="ZRAY_TEMP_DIR", show_envvar=True,
              help="The --temp-dir the processes were started with.")
def stop(force, grace_s, temp_dir):
    """Stop the heads and nodes `zray start` started on this host (by pid)."""
    import psutil
    from zray.node.spill import remove_dead_spill_dirs
    from zray.serialization import remove_segments
    config = Config.from_env(temp_dir=temp_dir)
    alive = _launch.read_started(config.temp_dir)
    alive.sort(key=lambda e: e.get("role") == "head")       # nodes first
    stopped = sum(_stop_pid(psutil, entry["pid"], force, grace_s) for entry in alive)
    entries = _launch.read_started(config.temp_dir, alive_only=False)
    # what every node started from here left, dead (crashed, SIGKILLed) or alive
    node_ids = {e["node_id"] for e in entries if isinstance(e.get("node_id"), str)}
    for session_dir in {e.get("session_dir") for e in entries if e.get("session_dir")}:
        node_ids.update(_launch.session_node_ids(session_dir))
    for node_id in sorted(node_ids):
        _launch.await_node_processes_gone(node_id)
        try:
            remove_segments(config.shm_dir, bytes.fromhex(node_id))
        except ValueError:
            continue
    # and their spill folders (a node stopped cleanly removed its own already)
    bases = {e.get(k) for e in entries for k in ("spill_base", "session_dir")}
    for base in sorted(b for b in bases if b):
        remove_dead_spill_dirs(base)
    _launch.write_started(config.temp_dir, [])
    click.echo(f"stopped {stopped} zray process(es)" if stopped else
               "nothing to stop: no zray process started here is running")


def _stop_pid(psutil, pid: int, force: bool, grace_s: float) -> int:
    """Stop one recorded process (SIGTERM, then SIGKILL after ``grace_s``); 1 if
    it was running."""
    try:
        process = psutil.Process(pid)
        process.send_signal(signal.SIGKILL if force else signal.SIGTERM)
        try:
            process.wait(grace_s)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(5)
        return 1
    except psutil.NoSuchProcess:
        return 0


# --- inspect -------------------------------------------------------------------------

def _head(address: str | None) -> str:
    from zray.api import head_endpoint
    try:
        return head_endpoint(address or "auto")
    except (ValueError, ConnectionError) as exc:
        fail(str(exc))


def _ask(endpoint: str, name: str, args=None):
    from zray._admin import query
    try:
        return query(endpoint, name, args, timeout_s=5.0)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        fail(str(exc))


address_option = click.option(
    "--address", envvar="ZRAY_ADDRESS", show_envvar=True,
    help="HOST:PORT of the head (default: the cluster started on this host).")


@main.command()
@address_option
def status(address):
    """Nodes, resources in use, and demands waiting for resources."""
    endpoint = _head(address)
    nodes = _ask(endpoint, "nodes")
    total = _ask(endpoint, "cluster_resources")
    free = _ask(endpoint, "available_resources")
    demands = _ask(endpoint, "demands")
    alive = [n for n in nodes if n["Alive"]]
    click.echo(f"cluster at {endpoint[len('tcp://'):] if endpoint.startswith('tcp') else endpoint}"
               f": {len(alive)} node(s) alive, {len(nodes) - len(alive)} dead")
    click.echo("\nNodes")
    for node in nodes:
        state = "ALIVE" if node["Alive"] else f"DEAD ({node.get('DeathReason')})"
        click.echo(f"  {node['NodeID'][:12]}  {node['NodeManagerAddress']:<15}  {state}")
        if node["Alive"]:
            click.echo(f"    object store: {store_line(node)}")
    click.echo("\nResources (used / total)")
    for name in sorted(total):
        if name.startswith("node:") or "_group_" in name:
            continue      # a placement group's bundle: counted in its base resource
        used = total[name] - free.get(name, 0.0)
        click.echo(f"  {name:<20} {_amount(name, used)} / {_amount(name, total[name])}")
    pending = [d for d in demands if not d["feasible"]]
    click.echo("\nDemands")
    if not demands:
        click.echo("  (none)")
    for demand in demands:
        note = "" if demand["feasible"] else "  INFEASIBLE: no node has these resources"
        if demand.get("kind") == "placement_group":
            click.echo(f"  placement group {demand['placement_group_id'][:12]} "
                       f"({demand['strategy']}) waiting for bundles {demand['resources']}"
                       f"{note}")
            continue
        click.echo(f"  {demand['count']} task(s) waiting for {demand['resources']}{note}")
    if pending:
        click.echo(f"\n{len(pending)} infeasible demand(s) wait for a node that fits them")


def _amount(name: str, value: float) -> str:
    if name in ("memory", "object_store_memory"):
        return f"{value / 2**30:.2f} GiB"
    return f"{value:g}"


def store_line(node: dict) -> str:
    """"used / bound MiB, spilled MiB (n objects)" of a node's object store."""
    store = node.get("ObjectStore") or {}
    if not store:
        return "(no report yet)"
    mib = 2 ** 20
    return (f"{store['used_bytes'] / mib:.1f} / {store['bound_bytes'] / mib:.1f} MiB in "
            f"memory, {store['spilled_bytes'] / mib:.1f} MiB spilled "
            f"({store['spilled_objects']} objects)")


@main.command()
@address_option
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              envvar="ZRAY_MEMORY_LIMIT", show_envvar=True, help="Most objects to list.")
def memory(address, limit):
    """Objects by size, and where their copies live."""
    endpoint = _head(address)
    objects = _ask(endpoint, "list_objects", {"limit": 1_000_000})
    by_node = {}
    for obj in objects:
        for node in obj["locations"]:
            by_node[node] = by_node.get(node, 0) + obj["size_bytes"]
    inline = sum(o["size_bytes"] for o in objects if o["inline"])
    click.echo(f"{len(objects)} object(s); {inline} bytes inline at the head")
    for node, size in sorted(by_node.items(), key=lambda kv: -kv[1]):
        click.echo(f"  node {node[:12]}: {size / 2**20:.1f} MiB of objects")
    click.echo("object stores (in memory / bound, spilled to disk):")
    for node in _ask(endpoint, "nodes"):
        if node["Alive"]:
            click.echo(f"  node {node['NodeID'][:12]}: {store_line(node)}")
    objects.sort(key=lambda o: -o["size_bytes"])
    rows = [{"object_id": o["object_id"], "size_bytes": o["size_bytes"],
             "where": "inline" if o["inline"] else ",".join(n[:12] for n in o["locations"]),
             "references": o["references"]} for o in objects[:limit]]
    if rows:
        click.echo("")
        click.echo(_table(rows))


@main.command(name="dashboard-token")
@address_option
@click.option("--key", "key_file", envvar="ZRAY_CLUSTER_KEY_FILE", show_envvar=True,
              type=click.Path(dir_okay=False), help="The cluster's key file.")
def dashboard_token(address, key_file):
    """Print the token the cluster's dashboard asks for when it listens beyond
    loopback (derived from the cluster key: whoever holds the key may print it)."""
    from zray.dashboard.auth import dashboard_token as derive
    from zray.security import KeyFileError
    endpoint = _head(address)
    config = Config.from_env(cluster_key_file=os.path.abspath(key_file) if key_file else None)
    try:
        config = _launch.with_cluster_key(config, endpoint)
        session_dir = None
        if config.insecure or not config.cluster_key_file:     # a secret in its session
            address = endpoint.split("://", 1)[1]
            session_dir = next((e.get("session_dir") for e in
                                _launch.read_started(config.temp_dir)
                                if e.get("role") == "head" and e.get("address") == address),
                               None)
        click.echo(derive(config, session_dir))
    except (KeyFileError, ValueError, OSError) as exc:
        fail(f"cannot derive the dashboard token: {exc}")


@main.command(context_settings={"ignore_unknown_options": True,
                                "allow_extra_args": True})
@click.pass_context
def microbenchmark(ctx):
    """Run tools/microbenchmark.py (from a source checkout) with these arguments,
    e.g. `zray microbenchmark --quick` or `--compare ray,dask`."""
    import subprocess
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(here, "tools", "microbenchmark.py")
    if not os.path.exists(script):
        fail(f"the benchmark lives in the source tree ({script} is missing); run it "
             "from a checkout of zray installed with `pip install -e .`")
    sys.exit(subprocess.call([sys.executable, script, *ctx.args]))


_table = state_cli.table
for _command in state_cli.COMMANDS:
    main.add_command(_command)


def _register_job_commands() -> None:
    from zray._jobs_cli import job
    main.add_command(job)


_register_job_commands()


if __name__ == "__main__":
    sys.exit(main())
