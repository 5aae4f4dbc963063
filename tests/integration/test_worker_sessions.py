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
