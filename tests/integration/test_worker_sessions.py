"""Where workers sit among sessions and process groups (see
zray.worker.main.take_own_group)."""

import os

import pytest

import zray

pytestmark = pytest.mark.timeout(60)


def test_task_workers_lead_a_group_in_the_node_session_actors_a_session(fresh_cluster):
    """A task worker leads its own process group (killed as one) but stays in
    its node manager's session (one CPU share under sched_autogroup, with the
    node that feeds it); a worker whose first task creates an actor starts a
    session of its own (a fresh cluster: the actor comes first)."""
    fresh_cluster()

    @zray.remote
    def where():
        return os.getpid(), os.getpgid(0), os.getsid(0), os.getppid()

    @zray.remote
    class Where:
        def where(self):
            return os.getpid(), os.getpgid(0), os.getsid(0)

    actor = Where.remote()
    pid, pgid, sid = zray.get(actor.where.remote(), timeout=30)
    assert pgid == pid and sid == pid
    pid, pgid, sid, forkserver = zray.get(where.remote(), timeout=30)
    assert pgid == pid and sid != pid
    assert sid == os.getsid(forkserver)          # the node manager's session
    zray.kill(actor)


def test_an_actor_created_after_tasks_gets_a_worker_of_its_own(fresh_cluster):
    """Idle workers that ran tasks are not reused for an actor (they could not
    leave their process group for a session of their own): the node forks one."""
    fresh_cluster()

    @zray.remote
    def pid():
        return os.getpid()

    @zray.remote
    class Where:
        def where(self):
            return os.getpid(), os.getpgid(0), os.getsid(0)

    task_pids = set(zray.get([pid.remote() for _ in range(20)], timeout=30))
    actors = [Where.remote() for _ in range(2)]
    for actor in actors:
        actor_pid, pgid, sid = zray.get(actor.where.remote(), timeout=30)
        assert actor_pid not in task_pids
        assert pgid == actor_pid and sid == actor_pid
    zray.get(pid.remote(), timeout=30)          # tasks still run beside them
    for actor in actors:
        zray.kill(actor)
