"""Many nodes on one machine, for tests: Ray's ``ray.cluster_utils.Cluster``.

Each node is a separate node-manager process with its own resources, worker pool
and object store; they reach the head, and one another, over TCP on loopback, as
nodes on different hosts would.  Objects move between them by chunked transfer.

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=2, resources={"nodeB": 1})
    zray.init(address=cluster.address)
    ...
    cluster.remove_node(worker)          # SIGKILL: the head notices missed heartbeats
    zray.shutdown(); cluster.shutdown()
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import signal
import time

from zray import _launch
from zray.config import Config
from zray.serialization import remove_segments

HOST = "127.0.0.1"


class NodeHandle:
    """One node manager of a ``Cluster``."""

    def __init__(self, process, node_id: bytes, resources: dict, head: bool):
        self.process = process
        self.node_id = node_id.hex()
        self.unique_id = self.node_id
        self.node_ip_address = HOST
        self.resources = resources
        self.head = head

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.popen.poll() is None

    def __repr__(self):
        return f"NodeHandle({self.node_id[:12]}, pid={self.pid}, head={self.head})"


class Cluster:
    """A head and any number of node managers on this machine."""

    def __init__(self, initialize_head: bool = False, connect: bool = False,
                 head_node_args: dict | None = None, shutdown_at_exit: bool = True):
        self.head_node = None
        self.worker_nodes: list[NodeHandle] = []
        self.address = None
        self.head_process = None
        self.connected = False
        self.dashboard = None       # zray.dashboard.launch.Dashboard
        self._config = None
        self._session = None
        if shutdown_at_exit:
            atexit.register(self.shutdown)
        if initialize_head:
            self.add_node(**(head_node_args or {}))
            if connect:
                self.connect()
        elif connect:
            raise ValueError("connect=True needs initialize_head=True")

    # --- nodes -----------------------------------------------------------------------

    @property
    def config(self):
        """The cluster's Config (its key file among it); None before the head starts."""
        return self._config

    @property
    def dashboard_url(self) -> str | None:
        """http://HOST:PORT of the dashboard (``include_dashboard``), else None."""
        return self.dashboard.url if self.dashboard is not None else None

    @property
    def session_dir(self) -> str | None:
        """The folder of the cluster's sockets, key and logs (``logs/``)."""
        return self._session[1] if self._session else None

    def add_node(self, wait: bool = True, num_cpus=None, num_gpus=None, resources=None,
                 object_store_memory=None, memory=None, _system_config=None,
                 include_dashboard=False, dashboard_host="127.0.0.1", dashboard_port=0,
                 **ignored) -> NodeHandle:
        """Start a node manager (the first one also starts the head, and, with
        ``include_dashboard``, the dashboard: ``dashboard_url``)."""
        head = self.head_process is None
        if head:
            self._start_head(_system_config)
            if include_dashboard:
                self._start_dashboard(dashboard_host, dashboard_port)
        elif _system_config or include_dashboard:
            raise ValueError("_system_config and include_dashboard are set once, with the "
                             "head node's arguments")
        node_resources = _launch.default_resources(
            num_cpus, num_gpus, resources, memory=memory,
            object_store_memory=object_store_memory, host=HOST, head=head,
            shm_dir=self._config.shm_dir)
        node_id = os.urandom(16)
        process = _launch.start_node(self._config, self.address_endpoint, node_id,
                                     node_resources, self._session[1], HOST, os.getpid())
        node = NodeHandle(process, node_id, node_resources, head)
        if head:
            self.head_node = node
        else:
            self.worker_nodes.append(node)
        if wait:
            self.wait_for_nodes()
        return node

    def remove_node(self, node: NodeHandle, allow_graceful: bool = True) -> None:
        """Stop a node: SIGTERM and a clean exit when ``allow_graceful`` (the head
        learns at once), else SIGKILL (the head notices the missed heartbeats)."""
        if node is self.head_node:
            self.head_node = None
        elif node in self.worker_nodes:
            self.worker_nodes.remove(node)
        else:
            raise ValueError(f"{node!r} is not a node of this cluster")
        if allow_graceful:
            node.process.stop(self._config.shutdown_grace_s)
        else:
            node.process.popen.send_signal(signal.SIGKILL)
            node.process.popen.wait()
        # a killed node cannot clean its store; its fork server kills its workers
        _launch.await_node_processes_gone(node.node_id)
        remove_segments(self._config.shm_dir, bytes.fromhex(node.node_id))
        from zray.node.spill import remove_spill_dir
        remove_spill_dir(self._config.object_spilling_directory or self._session[1],
                         bytes.fromhex(node.node_id))

    def list_all_nodes(self) -> list:
        return ([self.head_node] if self.head_node else []) + list(self.worker_nodes)

    def wait_for_nodes(self, timeout: float = 30) -> None:
        """Wait until the head sees every node added (and not removed) as alive."""
        nodes = self.list_all_nodes()
        wanted = {n.node_id for n in nodes}
        deadline = time.monotonic() + timeout
        from zray._admin import query
        while True:
            for node in nodes:
                node.process.check()
            seen = {n["NodeID"] for n in query(self.address_endpoint, "nodes",
                                               config=self._config) if n["Alive"]}
            if wanted <= seen:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nodes {sorted(w[:12] for w in wanted - seen)} did not "
                                   f"join in {timeout} s")
            time.sleep(0.02)

    # --- driver ----------------------------------------------------------------------

    def connect(self, namespace=None):
        import zray
        context = zray.init(address=self.address, namespace=namespace)
        self.connected = True
        return context

    def shutdown(self) -> None:
        if self.head_process is None:
            return
        if self.connected:
            import zray
            zray.shutdown()
            self.connected = False
        if self.dashboard is not None:
            self.dashboard.stop(self._config.shutdown_grace_s)
            self.dashboard = None
        for node in reversed(self.list_all_nodes()):
            self.remove_node(node, allow_graceful=True)
        self.head_process.stop(self._config.shutdown_grace_s)
        self.head_process = None
        session_dir = self._session[1]
        for name in os.listdir(session_dir):
            if name.endswith(".sock"):
                try:
                    os.unlink(os.path.join(session_dir, name))
                except FileNotFoundError:
                    pass

    # --- internals -------------------------------------------------------------------

    def _start_dashboard(self, host, port) -> None:
        from zray.dashboard.launch import start_dashboard
        try:
            self.dashboard = start_dashboard(self._config, self.address_endpoint,
                                             self._session[1], host, port,
                                             head_pid=self.head_process.pid)
        except BaseException:
            self.head_process.stop(self._config.shutdown_grace_s)
            self.head_process = None
            raise

    def _start_head(self, system_config) -> None:
        config = Config.from_system_config(system_config)
        self._session = _launch.make_session_dir(config)
        if not config.insecure and not config.cluster_key_file:
            from zray.security import KEY_FILE_NAME, create_key_file
            key_file = os.path.join(self._session[1], KEY_FILE_NAME)
            create_key_file(key_file)
            config = dataclasses.replace(config, cluster_key_file=key_file)
        self._config = config
        self.head_process, self.address_endpoint = _launch.start_tcp_head(
            config, self._session[0], self._session[1], HOST, 0, os.getpid())
        self.address = self.address_endpoint[len("tcp://"):]
        # so that drivers here find the key (or know there is none)
        _launch.remember_cluster_key(config.temp_dir, self.address,
                                     None if config.insecure else config.cluster_key_file)
