"""Task functions shared by the tests (importable by workers)."""

import os
import time

import numpy as np

import zray


@zray.remote
def noop():
    return None


@zray.remote
def echo(value):
    return value


@zray.remote
def add(a, b):
    return a + b


@zray.remote
def fail(message="boom"):
    raise ValueError(message)


@zray.remote
def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


@zray.remote
def make_array(n, fill=1.0):
    return np.full(n, fill)


@zray.remote
def array_sum(a):
    return float(a.sum())


@zray.remote
def pid():
    return os.getpid()


@zray.remote
def env(name):
    return os.environ.get(name)


@zray.remote
def nested_sum(n):
    return sum(zray.get([add.remote(i, i) for i in range(n)]))


@zray.remote
def get_nested(refs):
    return zray.get(refs[0])


@zray.remote
def die(code=1):
    os._exit(code)


@zray.remote
def die_once(marker_path):
    """Crash the first time, succeed afterwards (counts runs in a file)."""
    with open(marker_path, "a") as f:
        f.write("x")
    with open(marker_path) as f:
        runs = len(f.read())
    if runs == 1:
        os._exit(3)
    return runs


@zray.remote
def count_run(marker_path):
    with open(marker_path, "a") as f:
        f.write("x")
    return True


@zray.remote
def concurrency_probe(marker_dir, seconds):
    """Record how many probes run at once by files in a folder."""
    me = os.path.join(marker_dir, str(os.getpid()) + "-" + str(time.monotonic_ns()))
    open(me, "w").close()
    time.sleep(seconds)
    running = len(os.listdir(marker_dir))
    os.unlink(me)
    return running


@zray.remote
def shout(text):
    print(text)
    return len(text)


@zray.remote
def flaky_app_error(marker_path):
    with open(marker_path, "a") as f:
        f.write("x")
    with open(marker_path) as f:
        if len(f.read()) < 3:
            raise KeyError("not yet")
    return "ok"


@zray.remote
def context_ids():
    ctx = zray.get_runtime_context()
    return ctx.get_job_id(), ctx.get_node_id(), ctx.get_task_id()


# --- used by test_util.py: actors for ActorPool and Queue, functions for Pool ---------

@zray.remote
class Doubler:
    def double(self, value):
        return 2 * value

    def slow_double(self, value, seconds):
        time.sleep(seconds)
        return 2 * value


@zray.remote
def put_range(queue, n):
    for i in range(n):
        queue.put(i)
    return n


@zray.remote
class QueueConsumer:
    def __init__(self, queue):
        self.queue = queue

    def take(self, n, timeout_s=10):
        return [self.queue.get(timeout=timeout_s) for _ in range(n)]


def square(x):
    return x * x


def add_pair(a, b):
    return a + b


def fail_on_three(x):
    if x == 3:
        raise ValueError("three is not allowed")
    return x


def sleep_identity(x, seconds=0.5):
    time.sleep(seconds)
    return x


def sleep_inverse(x):
    """Larger x finishes sooner."""
    time.sleep(0.05 * (5 - x))
    return x


def worker_pid(_=None):
    return os.getpid()


POOL_INIT_VALUE = None


def set_pool_init_value(value):
    global POOL_INIT_VALUE
    POOL_INIT_VALUE = value


def read_pool_init_value(_=None):
    return POOL_INIT_VALUE


def failing_initializer():
    raise RuntimeError("initializer failed")


# --- compatibility (tests/test_compat.py) -------------------------------------------

class TwoArgError(Exception):
    """An exception whose __init__ takes other arguments than its args: it
    cannot be unpickled by the default reduce."""

    def __init__(self, code, detail):
        super().__init__(f"code {code}: {detail}")
        self.code = code


@zray.remote(max_retries=0)
def raise_memory_error():
    raise MemoryError("pretend the heap ran out")


@zray.remote(max_retries=0)
def raise_two_arg_error():
    raise TwoArgError(7, "needs two arguments")


@zray.remote(max_retries=0)
def raise_unpicklable_error():
    import threading
    error = RuntimeError("holds a lock")
    error.lock = threading.Lock()
    raise error


@zray.remote(max_retries=0)
def raise_exception_group():
    raise ExceptionGroup("several", [ValueError("one"), KeyError("two")])


@zray.remote
def two_and_keyword(a, b=2, *, c=3):
    return a + b + c


THREAD_COUNT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@zray.remote
def thread_count_vars():
    return [os.environ.get(name) for name in THREAD_COUNT_VARS]


@zray.remote
def blas_threads():
    """How many threads numpy's OpenBLAS runs with here (None: no OpenBLAS)."""
    import ctypes
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    for path in paths:
        lib = ctypes.CDLL(path)
        for symbol in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                       "openblas_get_num_threads"):
            function = getattr(lib, symbol, None)
            if function is not None:
                return function()
    return None


@zray.remote
def env_here_and_in_a_child(names):
    """The variables here and in a task this one submits (runtime_env inheritance)."""
    return ([os.environ.get(n) for n in names],
            zray.get(env_of.remote(names)))


@zray.remote
def env_of(names):
    return [os.environ.get(n) for n in names]


@zray.remote
def shout_large(text):
    """Prints, then returns an object the head must forward (shared memory): its
    log lines reach the head first on the same socket."""
    print(text)
    return np.zeros(200_000)
