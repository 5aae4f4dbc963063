"""The head's actor table: placement, addresses, restarts, names, lifetimes.

A part of ``HeadState``.  An actor's creation is a task (``spec.method ==
"__init__"``) that goes through the ordinary scheduler with its placement
resources (1 CPU unless ``num_cpus`` is given) but commits only the resources it
holds for life (0 CPU unless ``num_cpus`` is given).  Method calls go from the
caller straight to the actor's worker; the head hears of a call only when the
caller registers it (its refs are passed on, or it has ref arguments to pin) or
when its results hold refs or live in shared memory.

An actor handle is reference-counted like an object, under the id
``actor_id + b"\\xff\\xff"``: an anonymous actor is killed when its last handle
anywhere is gone.  Named actors live until their job ends, detached ones until
killed.
"""

from __future__ import annotations

import logging

from zray import exceptions as zerr
from zray.head.records import (
    Actor, ActorState, EarlyActorResult, NodeState, ObjectState, Task, TaskState,
)
from zray.head.events import error_of
from zray.ids import handle_id
from zray.protocol import Msg
from zray.serialization import dumps_error

log = logging.getLogger("zray.head")

class ActorTable:
    """The part of HeadState that owns actors, their names and early actor results."""

    def __init__(self, head):
        self.head = head
        self.out = head.out
        self.config = head.config
        self.actors = {}
        self.named_actors = {}
        #: task id -> results of an actor call not registered yet
        self.early_actor_results = {}

    def bind(self, head):
        """Reach the tables and parts of the others, once all exist."""
        self.clients = head.clients
        self.early_items = head.early_items
        self.job_namespaces = head.job_namespaces
        self.nodes = head.nodes
        self.objects = head.objects
        self.tasks = head.tasks
        self.directory = head.directory
        self.generator_items = head.generator_items
        self.membership = head.membership
        self.scheduler = head.scheduler
        self.task_flow = head.task_flow

    # --- creation --------------------------------------------------------------------

    def on_create_actor(self, key, items, now):
        client = self.membership.client(key, now)
        for spec, request_id in items:
            try:
                reply = self._create_actor(client, spec)
            except ValueError as exc:
                reply = (False, str(exc))
            if request_id:
                self.out.send(key, Msg.QUERY_REPLY, (request_id,) + reply)

    def _create_actor(self, client, spec):
        options = spec.actor_options
        job_id = client.job_id or spec.job_id
        namespace = options.get("namespace") or self.job_namespaces.get(job_id) or ""
        name = options.get("name")
        if name:
            existing = self.actors.get(self.named_actors.get((namespace, name)))
            if existing is not None and existing.state is not ActorState.DEAD:
                if not options.get("get_if_exists"):
                    raise ValueError(
                        f"The name {name} (namespace={namespace}) is already taken by "
                        f"another actor. Please use a different name or get the existing "
                        "actor with zray.get_actor().")
                self._hold_handle(client, existing.actor_id)
                return (True, existing.meta())
        actor = Actor(spec, namespace, job_id)
        self.actors[actor.actor_id] = actor
        if name:
            self.named_actors[(namespace, name)] = actor.actor_id
        self._hold_handle(client, actor.actor_id)
        task = self.task_flow.add(Task(spec, client.key))
        task.created = self.head.now       # its event row's submit time
        for object_id in spec.dep_ids + tuple(spec.nested_ids):
            if object_id not in self.objects:
                self.directory.unknown_object(object_id)
        self.directory.pin_task_args(task)
        waiting = 0
        for dep_id in spec.dep_ids:
            dep = self.objects[dep_id]
            if dep.state is ObjectState.PENDING:
                dep.add_dependent(spec.task_id)
                waiting += 1
        task.waiting_on = waiting
        if waiting == 0:
            self.task_flow.deps_ready(task)
        return (True, actor.meta())

    def _hold_handle(self, client, actor_id):
        oid = handle_id(actor_id)
        obj = self.directory.ready_record(oid)
        obj.hold(client.key)
        client.holding[oid] = client.holding.get(oid, 0) + 1

    def on_actor_ready(self, key, items, now):
        client = self.membership.client(key, now)
        for actor_id, address, pid in items:
            actor = self.actors.get(actor_id)
            task = self.tasks.get(actor_id)
            if actor is None or actor.state is ActorState.DEAD:
                continue
            actor.move(ActorState.ALIVE)
            actor.address = address
            actor.pid = pid
            actor.worker_key = key
            actor.node_id = client.node_id
            if task is not None and task.state is TaskState.ASSIGNED:
                task.move(TaskState.FINISHED)
                self.directory.unpin_task_args(task)
                self.head.events.finished(task.spec.task_id, task.spec.attempt, True, now,
                                          node_id=client.node_id, pid=pid, task=task)
            for task_id in actor.pending_cancels:
                if task_id in actor.calls:
                    self.out.send(key, Msg.CANCEL_TASKS, (task_id, False))
            actor.pending_cancels.clear()
            self._publish_actor(actor)

    # --- subscriptions ---------------------------------------------------------------

    def on_subscribe_actor(self, key, items, now):
        for (actor_id,) in items:
            actor = self.actors.get(actor_id)
            if actor is None:
                self.out.send(key, Msg.ACTOR_INFO, (actor_id, ActorState.DEAD.value, None,
                                                    "The actor is unknown to the head."))
                continue
            actor.subscribers.add(key)
            self.out.send(key, Msg.ACTOR_INFO, actor.info_item())

    def _publish_actor(self, actor):
        item = actor.info_item()
        for key in list(actor.subscribers):
            if key in self.clients:
                self.out.send(key, Msg.ACTOR_INFO, item)
            else:
                actor.subscribers.discard(key)

    # --- method calls ----------------------------------------------------------------

    def register_actor_call(self, task):
        spec = task.spec
        actor = self.actors.get(spec.actor_id)
        task.move(TaskState.ASSIGNED)
        if actor is not None and actor.node_id is not None:
            self.head.events.scheduled(task, actor.node_id, self.head.now)
        self.directory.pin_task_args(task)
        if spec.task_id in self.early_items:    # a generator's items from the actor
            self.generator_items.apply_early_items(task)
        early = self.early_actor_results.pop(spec.task_id, None)
        if early is not None:       # it ran before its registration got here
            self._finish_actor_call(task, early.status, early.results)
            self._unpin_early(early.results)
            return
        if actor is None or actor.state is ActorState.DEAD:
            text = actor.death_text if actor is not None else "The actor is unknown."
            self.task_flow.finish_with_error(task, zerr.ActorDiedError(
                f"The actor {spec.actor_id.hex()} is dead: {text}", spec.actor_id),
                TaskState.FAILED)
            return
        actor.calls.add(spec.task_id)

    def on_actor_tasks_finished(self, key, items, now):
        for task_id, attempt, status, results in items:
            task = self.tasks.get(task_id)
            if task is None:
                # the caller's registration is still on its way: keep the results, and
                # keep what they contain alive until it arrives
                client = self.clients.get(key)
                self.early_actor_results[task_id] = EarlyActorResult(
                    now, status, results, client.node_id if client is not None else None)
                for _object_id, _kind, _data, _size, contained in results:
                    for cid in contained:
                        inner = self.objects.get(cid)
                        if inner is not None:
                            inner.pins += 1
                continue
            if task.state is not TaskState.ASSIGNED:
                continue
            self._finish_actor_call(task, status, results)

    def _finish_actor_call(self, task, status, results):
        actor = self.actors.get(task.spec.actor_id)
        if actor is not None:
            actor.calls.discard(task.spec.task_id)
            if actor.exit_when_idle and not actor.calls:
                self._kill_actor(actor, True, "All references to the actor were removed, "
                                              "so it was stopped.")
        client = self.clients.get(actor.worker_key) if actor is not None else None
        node = self.nodes.get(client.node_id) if client is not None else None
        task.move(TaskState.FINISHED if status == 0 else TaskState.FAILED)
        self.head.events.finished(
            task.spec.task_id, task.spec.attempt, status == 0, self.head.now,
            node_id=node.node_id if node is not None else None,
            pid=actor.pid if actor is not None else None,
            error=None if status == 0 else error_of(results))
        for object_id, kind, data, size, contained in results:
            self.directory.store_result(object_id, kind, data, size, contained, node,
                               push_owner=False)
        self.task_flow.task_done(task)

    def _unpin_early(self, results):
        for _object_id, _kind, _data, _size, contained in results:
            for cid in contained:
                inner = self.objects.get(cid)
                if inner is not None:
                    inner.pins -= 1
                    self.directory.maybe_free(inner)

    def expire_early_results(self, now):
        """Results no caller claimed: unpin what they hold, free their segments."""
        for task_id, entry in list(self.early_actor_results.items()):
            if now - entry.since > 60.0:
                del self.early_actor_results[task_id]
                self._unpin_early(entry.results)
                self.directory.discard_results(entry.results, self.nodes.get(entry.node_id))

    # --- death, restart, kill --------------------------------------------------------

    def on_actor_died(self, key, items, now):
        for actor_id, text, no_restart in items:
            actor = self.actors.get(actor_id)
            if actor is None:
                continue
            actor.death_text = text
            if no_restart:
                actor.no_restart = True
                self._actor_dead(actor, text)

    def on_kill_actor(self, key, items, now):
        for actor_id, no_restart in items:
            actor = self.actors.get(actor_id)
            if actor is not None:
                self._kill_actor(actor, no_restart, "The actor was killed by zray.kill().")

    def kill(self, actor, text):
        """Kill the actor for good (its placement group went)."""
        self._kill_actor(actor, True, text)

    def _kill_actor(self, actor, no_restart, text):
        if actor.state is ActorState.DEAD:
            return
        if no_restart:
            actor.no_restart = True
        actor.death_text = text
        task = self.tasks.get(actor.actor_id)
        node = self.nodes.get(task.node_id) if task is not None and task.node_id else None
        if node is not None and node.state is NodeState.ALIVE:
            self.out.send(node.identity, Msg.CANCEL_TASKS, (actor.actor_id, True))
        if no_restart or actor.state is ActorState.PENDING or node is None:
            self._actor_dead(actor, text)

    def actor_process_died(self, actor, text, now):
        """The actor's worker (or node) is gone: restart it or declare it dead."""
        if actor.state is ActorState.DEAD:
            return
        task = self.tasks.get(actor.actor_id)
        if task is not None:
            self.scheduler.release(task)
        limit = actor.spec.actor_options.get("max_restarts", 0)
        restartable = not actor.no_restart and not actor.exit_when_idle and \
            (limit < 0 or actor.restarts < limit)
        cause = actor.death_text or text
        retries = actor.spec.actor_options.get("max_task_retries", 0)
        for task_id in list(actor.calls):
            call = self.tasks.get(task_id)
            if call is None:
                actor.calls.discard(task_id)
                continue
            if restartable and (retries < 0 or call.spec.attempt < retries):
                call.spec.attempt += 1
                continue
            actor.calls.discard(task_id)
            self.task_flow.finish_with_error(call, zerr.ActorDiedError(
                f"The actor {actor.class_name} ({actor.actor_id.hex()}) died while running "
                f"{call.spec.name}: {cause}", actor.actor_id), TaskState.FAILED)
        if not restartable or task is None:
            self._actor_dead(actor, cause)
            return
        actor.restarts += 1
        actor.move(ActorState.RESTARTING)
        actor.address = None
        actor.death_text = None
        log.info("restarting actor %s (restart %d)", actor.actor_id.hex(), actor.restarts)
        self._publish_actor(actor)
        self.head.events.keep(task)
        task.spec.attempt += 1
        task.node_id = None
        if task.state is not TaskState.PENDING:    # else it is queued already
            task.move(TaskState.PENDING)
            self.scheduler.enqueue(task)

    def _actor_dead(self, actor, text):
        if actor.state is ActorState.DEAD:
            return
        actor.move(ActorState.DEAD)
        actor.death_text = text or "The actor died."
        actor.address = None
        if actor.name and self.named_actors.get((actor.namespace, actor.name)) == \
                actor.actor_id:
            del self.named_actors[(actor.namespace, actor.name)]
        error = zerr.ActorDiedError(
            f"The actor {actor.class_name} ({actor.actor_id.hex()}) is dead: "
            f"{actor.death_text}", actor.actor_id)
        for task_id in list(actor.calls):
            call = self.tasks.get(task_id)
            if call is not None and call.state is TaskState.ASSIGNED:
                self.task_flow.finish_with_error(call, error, TaskState.FAILED)
        actor.calls.clear()
        task = self.tasks.get(actor.actor_id)
        if task is not None:
            self.scheduler.release(task)
            if task.state in (TaskState.WAITING, TaskState.PENDING,
                              TaskState.ASSIGNED):
                task.move(TaskState.FAILED)
            self.directory.unpin_task_args(task)
            self.task_flow.forget(actor.actor_id)
        self._publish_actor(actor)

    def actor_handle_released(self, actor_id):
        """The last handle is gone: stop an anonymous actor once the calls already
        made to it have finished (as Ray does)."""
        actor = self.actors.get(actor_id)
        if actor is None or actor.detached or actor.name:
            return
        if actor.calls:
            actor.exit_when_idle = True
            return
        self._kill_actor(actor, True, "All references to the actor were removed, so it "
                                      "was stopped.")

    def job_finished(self, job_id):
        for actor in list(self.actors.values()):
            if actor.job_id == job_id and not actor.detached:
                self._kill_actor(actor, True, "The actor's job (driver) finished.")

    def worker_hosted_actor(self, worker_key):
        for actor in self.actors.values():
            if actor.worker_key == worker_key and actor.state is not ActorState.DEAD:
                return actor
        return None


def error_blob(text: str) -> bytes:
    return dumps_error(zerr.ActorDiedError(text))


__all__ = ["ActorTable", "ActorState", "error_blob"]
