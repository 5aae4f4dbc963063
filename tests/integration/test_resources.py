"""The resource rules head, node and client share (zray.resources)."""

from zray.resources import fits, held, leasable


def test_fits_allows_float_slack_and_missing_names_count_as_zero():
    assert fits({"CPU": 0.3}, {"CPU": 0.1 + 0.2})
    assert not fits({"GPU": 1.0}, {"CPU": 8.0})
    assert fits({}, {})


def test_an_actor_holds_only_its_held_resources():
    class Spec:
        resources = {"CPU": 1.0}
        actor_options = {"held": {}}
    assert held(Spec) == {}
    Spec.actor_options = None
    assert held(Spec) == {"CPU": 1.0}


def test_only_plain_one_cpu_tasks_are_leasable():
    class Spec:
        resources = {"CPU": 1.0}
        strategy = None
        max_calls = 0
        actor_id = None
        timeout_s = None
        runtime_env = {"env_vars": {"A": "1"}}
    assert leasable(Spec)
    Spec.runtime_env = {"working_dir": "zray://pkg_ab.zip"}   # its own worker pool
    assert not leasable(Spec)
    Spec.runtime_env = None
    assert leasable(Spec)
    Spec.strategy = "SPREAD"
    assert not leasable(Spec)
