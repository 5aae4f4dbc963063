"""Ray compatibility details: errors, argument checks, options, actor classes."""

import os
import sys

import pytest

import zray
from zray import exceptions as zerr
from tests import actors as a, tasks as t
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(60)


# --- tests with clusters of their own (before the module's shared one starts) --------

def test_ref_from_an_earlier_init_raises_at_once(fresh_cluster):
    fresh_cluster(num_cpus=1)
    put_ref, task_ref = zray.put(1), t.echo.remote(2)
    assert zray.get(task_ref) == 2
    zray.shutdown()
    fresh_cluster(num_cpus=1)
    for use in (lambda: zray.get(put_ref), lambda: zray.get([task_ref]),
                lambda: zray.wait([task_ref]), lambda: t.echo.remote(put_ref)):
        with pytest.raises(zerr.OwnerDiedError, match="earlier zray.init"):
            use()
    assert zray.get(t.echo.remote(3), timeout=30) == 3


def test_large_function_or_actor_class_warns_then_is_refused(fresh_cluster):
    fresh_cluster(num_cpus=1, _system_config={"function_size_warn_bytes": 100_000,
                                              "function_size_error_bytes": 1_000_000})
    medium, large = b"m" * 300_000, b"l" * 3_000_000

    @zray.remote
    def captures_medium():
        return len(medium)

    @zray.remote
    def captures_large():
        return len(large)

    @zray.remote
    class CapturesLarge:
        def size(self):
            return len(large)

    with pytest.warns(UserWarning, match="remote function .*captures_medium is very large"):
        ref = captures_medium.remote()
    assert zray.get(ref, timeout=30) == 300_000
    with pytest.raises(ValueError, match="captures_large is too large .2.9 MiB > .*1.0 MiB"):
        captures_large.remote()
    with pytest.raises(ValueError, match="actor class CapturesLarge is too large"):
        CapturesLarge.remote()


def test_preloaded_numpy_starts_one_blas_thread_per_worker(fresh_cluster):
    """numpy loaded before the task (preloaded by the fork server): OpenBLAS
    read its thread count then, so the worker sets it through OpenBLAS's own
    call whenever a task's num_cpus changes it."""
    for name in t.THREAD_COUNT_VARS:
        if name in os.environ:
            pytest.skip(f"{name} is set in this environment; workers keep it")
    fresh_cluster(num_cpus=2, _system_config={"worker_preload_modules": "numpy",
                                              "prestart_workers": 1})
    assert zray.get(t.thread_count_vars.remote(), timeout=30) == ["1", "1", "1"]
    threads = zray.get(t.blas_threads.remote(), timeout=30)
    if threads is None:
        pytest.skip("numpy here has no OpenBLAS to ask")
    assert threads == 1
    assert zray.get(t.blas_threads.options(num_cpus=2).remote(), timeout=30) == 2
    assert zray.get(t.blas_threads.remote(), timeout=30) == 1


def test_thread_count_variables_the_user_set_are_kept(fresh_cluster, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    fresh_cluster(num_cpus=2)
    assert zray.get(t.thread_count_vars.options(num_cpus=2).remote(), timeout=30) == \
        ["3", "2", "2"]


def test_init_runtime_env_vars_reach_every_task_actor_and_child(fresh_cluster):
    fresh_cluster(num_cpus=2, runtime_env={"env_vars": {"ZC_JOB": "job", "ZC_BOTH": "job"}})
    names = ["ZC_JOB", "ZC_BOTH", "ZC_TASK"]
    assert zray.get(t.env_of.remote(names), timeout=30) == ["job", "job", None]
    own = {"env_vars": {"ZC_BOTH": "task", "ZC_TASK": "task"}}
    here, child = zray.get(t.env_here_and_in_a_child.options(runtime_env=own).remote(
        names), timeout=30)
    assert here == child == ["job", "task", "task"]
    actor = a.EnvReader.remote()
    assert zray.get(actor.read.remote(names), timeout=30) == ["job", "job", None]


def test_init_warns_about_what_it_ignores(fresh_cluster):
    with pytest.raises(ValueError, match="no_such_field"):
        zray.init(num_cpus=1, runtime_env={"no_such_field": 1})
    assert not zray.is_initialized()
    with pytest.warns(UserWarning) as warned:
        fresh_cluster(num_cpus=1, local_mode=True,
                      runtime_env={"config": {"setup_timeout_seconds": 60}})
    messages = " ".join(str(w.message) for w in warned)
    assert "local_mode" in messages and "'config' is ignored" in messages
    assert zray.get(t.echo.remote(1), timeout=30) == 1


def test_log_to_driver_false_keeps_worker_output_away(fresh_cluster, capfd):
    fresh_cluster(num_cpus=1)
    zray.get(t.shout_large.remote("echoed-by-default"), timeout=30)
    assert wait_for(lambda: "echoed-by-default" in capfd.readouterr().out)
    zray.shutdown()
    fresh_cluster(num_cpus=1, log_to_driver=False)
    zray.get(t.shout_large.remote("kept-in-the-worker"), timeout=30)
    zray.get(t.shout_large.remote("kept-in-the-worker"), timeout=30)
    assert "kept-in-the-worker" not in capfd.readouterr().out


# --- task errors that cannot become RayTaskError(cause) ------------------------------

def test_memory_error_arrives_as_plain_ray_task_error(cluster):
    with pytest.raises(zerr.RayTaskError) as info:
        zray.get(t.raise_memory_error.remote())
    assert isinstance(info.value.cause, MemoryError)
    text = str(info.value)
    assert "raise_memory_error" in text and "pretend the heap ran out" in text
    assert "Traceback" in text and "MemoryError" in text


def test_exception_whose_init_takes_other_arguments(cluster):
    with pytest.raises(zerr.RayTaskError) as info:
        zray.get(t.raise_two_arg_error.remote())
    text = str(info.value)
    assert "TwoArgError" in text and "needs two arguments" in text
    assert "raise_two_arg_error" in text and "Traceback" in text
    assert "TwoArgError" in str(info.value.cause)


def test_exception_that_cannot_be_pickled_keeps_its_traceback(cluster):
    with pytest.raises(zerr.RayTaskError) as info:
        zray.get(t.raise_unpicklable_error.remote())
    text = str(info.value)
    assert "raise_unpicklable_error" in text and "holds a lock" in text
    assert "Traceback" in text
    assert "could not be pickled" in str(info.value.cause)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is Python 3.11+")
def test_exception_group_is_also_an_exception_group(cluster):
    with pytest.raises(zerr.RayTaskError) as info:
        zray.get(t.raise_exception_group.remote())
    assert isinstance(info.value, ExceptionGroup)
    assert [type(e) for e in info.value.exceptions] == [ValueError, KeyError]
    assert "raise_exception_group" in str(info.value)


# --- ObjectRefs, get and wait ---------------------------------------------------------

def test_wait_on_no_refs_returns_two_empty_lists(cluster):
    assert zray.wait([]) == ([], [])
    assert zray.wait([], num_returns=0, timeout=0) == ([], [])


def test_object_ref_of_a_wrong_id_is_a_clear_error():
    with pytest.raises(ValueError, match="18 bytes"):
        zray.ObjectRef(b"abc")
    with pytest.raises(TypeError, match="bytes"):
        zray.ObjectRef("a" * 18)
    assert zray.ObjectRef(bytes(18)).is_nil()


# --- options checked at decoration and .options() time --------------------------------

def _function():
    return None


class _Plain:
    pass


@pytest.mark.parametrize("options, error, words", [
    ({"num_cpus": "2"}, TypeError, "num_cpus"),
    ({"num_returns": 1.5}, TypeError, "num_returns"),
    ({"max_retries": "3"}, TypeError, "max_retries"),
    ({"resources": ["GPU"]}, TypeError, "resources"),
    ({"scheduling_strategy": 3}, TypeError, "scheduling_strategy"),
    ({"num_cpus": -1}, ValueError, "num_cpus"),
    ({"max_retries": -2}, ValueError, "max_retries"),
    ({"retry_exceptions": [int]}, ValueError, "retry_exceptions"),
    ({"runtime_env": {"no_such_field": 1}}, ValueError, "no_such_field"),
    ({"num_cpu": 1}, ValueError, "num_cpu"),
])
def test_bad_task_option_is_an_error_naming_it(options, error, words):
    with pytest.raises(error, match=words):
        zray.remote(**options)(_function)
    with pytest.raises(error, match=words):
        zray.remote(_function).options(**options)


@pytest.mark.parametrize("options, error, words", [
    ({"get_if_exists": 1}, TypeError, "get_if_exists"),
    ({"max_restarts": 1.0}, TypeError, "max_restarts"),
    ({"namespace": 5}, TypeError, "namespace"),
    ({"lifetime": "forever"}, ValueError, "lifetime"),
    ({"max_concurrency": 0}, ValueError, "max_concurrency"),
    ({"max_restart": 1}, ValueError, "max_restart"),
])
def test_bad_actor_option_is_an_error_naming_it(options, error, words):
    with pytest.raises(error, match=words):
        zray.remote(**options)(_Plain)
    with pytest.raises(error, match=words):
        zray.remote(_Plain).options(**options)


def test_decorator_only_options_are_refused_by_options():
    chained = zray.remote(max_calls=2)(_function).options(num_cpus=1).options(num_gpus=0)
    assert chained is not None
    with pytest.raises(ValueError, match="concurrency_groups"):
        zray.remote(_Plain).options(concurrency_groups={"io": 1})
    assert zray.remote(_Plain).options(num_cpus=1).options(name="x") is not None


def test_none_means_the_default(cluster):
    assert zray.get(t.echo.options(num_cpus=None, max_retries=None).remote(5)) == 5


# --- arguments checked at .remote() time ----------------------------------------------

@pytest.mark.parametrize("call, words", [
    (lambda: t.two_and_keyword.remote(), "missing a required argument: 'a'"),
    (lambda: t.two_and_keyword.remote(1, 2, 3), "too many positional arguments"),
    (lambda: t.two_and_keyword.remote(1, d=4), "unexpected keyword argument 'd'"),
    (lambda: t.two_and_keyword.options(num_cpus=1).remote(), "required argument"),
    (lambda: a.Signatures.remote(), "missing a required argument: 'start'"),
    (lambda: a.Signatures.remote(1, 2), "too many positional arguments"),
    (lambda: a.Signatures.options(num_cpus=0).remote(1, stride=2), "'stride'"),
])
def test_wrong_arguments_are_a_type_error_in_the_caller(cluster, call, words):
    with pytest.raises(TypeError, match=words):
        call()


def test_wrong_arguments_to_actor_methods(cluster):
    actor = a.Signatures.remote(10, step=2)
    for call, words in [
            (lambda: actor.add.remote(), "missing a required argument: 'amount'"),
            (lambda: actor.add.remote(1, 2, 3), "too many positional"),
            (lambda: actor.add.remote(1, tims=2), "unexpected keyword argument 'tims'"),
            (lambda: actor.keyword_only.remote("x"), "too many positional"),
            (lambda: actor.double.remote(), "missing a required argument: 'x'"),
            (lambda: actor.kind.remote(), "missing a required argument: 'suffix'")]:
        with pytest.raises(TypeError, match=words):
            call()
    refs = [actor.add.remote(1), actor.add.remote(1, times=2), actor.keyword_only.remote(
        name="n"), actor.anything.remote(1, 2, k=3), actor.double.remote(4),
        actor.kind.remote("!")]
    assert zray.get(refs, timeout=30) == [12, 16, "n", 3, 8, "Signatures!"]


def test_a_handle_passed_to_a_task_checks_arguments_too(cluster):
    actor = a.Signatures.remote(0)

    @zray.remote
    def call_without_arguments(handle):
        try:
            handle.add.remote()
        except TypeError as exc:
            return str(exc)
        return "no error"

    assert "amount" in zray.get(call_without_arguments.remote(actor), timeout=30)


def test_argument_check_agrees_with_signature_bind():
    import inspect
    from zray._signature import check_for, shape_of

    def f1(a, b=1, *args, c, d=2, **kw): pass
    def f2(a, /, b, *, c=1): pass
    def f3(*args): pass
    def f4(): pass
    def f5(a, b=2): pass

    for function in (f1, f2, f3, f4, f5):
        check, signature = check_for(shape_of(function)), inspect.signature(function)
        for args in ((), (1,), (1, 2), (1, 2, 3)):
            for kwargs in ({}, {"c": 1}, {"b": 1}, {"z": 1}):
                try:
                    signature.bind(*args, **kwargs)
                    expected = None
                except TypeError:
                    expected = TypeError
                try:
                    check(args, kwargs, function.__name__)
                    got = None
                except TypeError:
                    got = TypeError
                assert got is expected, (function.__name__, args, kwargs)


# --- actor classes keep what their class has ------------------------------------------

def test_actor_class_keeps_class_attributes_static_and_class_methods(cluster):
    cls = a.WithClassAttributes
    assert cls.__name__ == "WithClassAttributes"
    assert cls.__qualname__ == "WithClassAttributes"
    assert (cls.X, cls.PARENT, cls.GRANDPARENT) == (3, 6, 2)
    assert cls.static_f() == 5 and cls.class_f() == 6
    assert cls.grandparent_static() == 1
    assert cls.parent_class_method() == "WithClassAttributes"
    with pytest.raises(AttributeError):
        cls.no_such_attribute
    actor = cls.remote()
    assert zray.get(actor.g.remote(), timeout=30) == (3, 5, 6, 1)
    assert zray.get([actor.static_f.remote(), actor.class_f.remote(),
                     actor.inherited.remote(), actor.grandparent_static.remote(),
                     actor.parent_class_method.remote()], timeout=30) == \
        [5, 6, "from Grandparent", 1, "WithClassAttributes"]


def test_subclassing_an_actor_class_is_refused_and_the_plain_class_works(cluster):
    from zray.actor import ActorClassInheritanceException
    with pytest.raises(ActorClassInheritanceException, match="Inheriting from actor"):
        class Derived(a.RemoteBase):
            pass
    assert issubclass(ActorClassInheritanceException, TypeError)
    sub = a.SubclassOfTheUnderlyingClass.remote(21)
    base = a.RemoteBase.remote(4)
    assert zray.get([sub.doubled.remote(), sub.get.remote(), base.get.remote()],
                    timeout=30) == [42, 21, 4]


# --- leaving an actor: __ray_terminate__, exit_actor() and atexit ---------------------

def test_ray_ready_and_ray_call(cluster):
    actor = a.Signatures.remote(5)
    assert zray.get(actor.__ray_ready__.remote(), timeout=30) is True
    assert zray.get(actor.__ray_call__.remote(lambda self, n: self.value + n, 2),
                    timeout=30) == 7


@pytest.mark.parametrize("how", ["exit_actor", "__ray_terminate__", "async exit_actor"])
def test_leaving_an_actor_runs_its_atexit_handlers(cluster, tmp_path, how):
    marker = tmp_path / "atexit-ran"
    if how == "async exit_actor":
        actor = a.AsyncLeavesAMark.remote(str(marker))
    else:
        actor = a.LeavesAMark.remote(str(marker))
    assert zray.get(actor.pid.remote(), timeout=30)
    call = actor.__ray_terminate__ if how == "__ray_terminate__" else actor.exit
    with pytest.raises(zerr.RayActorError):
        zray.get(call.remote(), timeout=30)
    assert wait_for(marker.exists, timeout_s=20)
    with pytest.raises(zerr.RayActorError):
        zray.get(actor.pid.remote(), timeout=30)


# --- OMP_NUM_THREADS and friends follow the task's num_cpus ---------------------------

def test_thread_count_variables_follow_num_cpus(cluster, monkeypatch):
    for name in t.THREAD_COUNT_VARS:
        if name in os.environ:
            pytest.skip(f"{name} is set in this environment; workers keep it")
    assert zray.get(t.thread_count_vars.remote(), timeout=30) == ["1", "1", "1"]
    assert zray.get(t.thread_count_vars.options(num_cpus=2).remote(),
                    timeout=30) == ["2", "2", "2"]
    assert zray.get(t.thread_count_vars.options(num_cpus=0.5).remote(),
                    timeout=30) == ["1", "1", "1"]
    own = {"env_vars": {"OMP_NUM_THREADS": "7"}}
    assert zray.get(t.thread_count_vars.options(runtime_env=own, num_cpus=2).remote(),
                    timeout=30) == ["7", "2", "2"]
    assert zray.get(t.thread_count_vars.remote(), timeout=30) == ["1", "1", "1"]
    actor = a.ThreadCounts.options(num_cpus=2).remote()
    assert zray.get(actor.read.remote(), timeout=30) == ["2", "2", "2"]
