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


# --- used by test_generators.py -----------------------------------------------------

def wait_for_file(path, timeout_s=30.0):
    """Block until ``path`` exists; True if it did in time."""
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@zray.remote
def count_up(n):
    for i in range(n):
        yield i


@zray.remote
def yield_after_files(paths, first=0):
    """Yield i only once paths[i] exists (-1 if it never appeared): the caller
    decides when each item is made."""
    for i, path in enumerate(paths):
        yield first + i if wait_for_file(path) else -1


@zray.remote(num_returns="streaming")
def yield_then_raise(n):
    for i in range(n):
        yield i
    raise ValueError(f"failed after {n} items")


@zray.remote
def yield_then_wait(marker, started):
    """Yield 0, say so in ``started``, then wait (cancellable) for ``marker``."""
    yield 0
    open(started, "w").close()
    wait_for_file(marker, timeout_s=60)
    yield 1


@zray.remote(max_retries=0)
def yield_then_die(n, marker):
    """Yield n items, then crash once the caller has them (it makes ``marker``)."""
    for i in range(n):
        yield i
    wait_for_file(marker)
    os._exit(7)


@zray.remote(max_retries=2)
def yield_die_once(n, marker):
    """Crash after half the items the first time (recorded in ``marker``)."""
    first = not os.path.exists(marker)
    for i in range(n):
        if first and i == n // 2:
            open(marker, "w").close()
            os._exit(7)
        yield i


@zray.remote
def yield_arrays(n, size, marker=None, done=None):
    """n float64 arrays of ``size`` elements each filled with its index; waits
    for ``marker`` (if given) after the first, makes ``done`` after the last."""
    for i in range(n):
        yield np.full(size, float(i))
        if marker is not None and i == 0:
            wait_for_file(marker)
    if done is not None:
        open(done, "w").close()


@zray.remote(num_returns="dynamic")
def dynamic_split(n, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise KeyError(f"no item {i}")
        yield i * 10


@zray.remote
def sum_stream(n):
    """A task that consumes a stream of a nested generator task."""
    return sum(zray.get(ref) for ref in count_up.remote(n))


@zray.remote
def total_of_dynamic(generator):
    return sum(zray.get(list(generator)))


@zray.remote(num_returns=2)
def two_by_yield():
    yield "a"
    yield "b"


@zray.remote
def yield_node_arrays(n, size, marker=None):
    """n (node id, array) items, the arrays filled with their index; counts runs
    in ``marker`` if given."""
    if marker is not None:
        with open(marker, "a") as f:
            f.write("x")
    node = zray.get_runtime_context().get_node_id()
    for i in range(n):
        yield node, np.full(size, float(i))


@zray.remote(max_retries=1, retry_exceptions=[KeyError])
def yield_raise_once(n, marker):
    """Raise a retriable error after half the items the first time."""
    first = not os.path.exists(marker)
    for i in range(n):
        if first and i == n // 2:
            open(marker, "w").close()
            raise KeyError("first attempt")
        yield i


# --- training loops (tests/test_train.py) ---------------------------------------------

def train_linear(config):
    """A 2-feature linear regression trained with DDP; reports every epoch with
    a checkpoint; fails once at ``fail_at_epoch`` if ``marker`` is absent."""
    import os
    import tempfile

    import torch

    import zray.train as train
    from zray.train.torch import prepare_data_loader, prepare_model

    torch.manual_seed(0)
    features = torch.randn(256, 2)
    targets = features @ torch.tensor([[2.0], [-3.0]]) + 0.5
    dataset = torch.utils.data.TensorDataset(features, targets)
    loader = prepare_data_loader(torch.utils.data.DataLoader(dataset, batch_size=32,
                                                             shuffle=True))
    model = prepare_model(torch.nn.Linear(2, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    start = 0
    checkpoint = train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(os.path.join(folder, "state.pt"))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1
    context = train.get_context()
    for epoch in range(start, config["epochs"]):
        if epoch == config.get("fail_at_epoch") and not os.path.exists(config["marker"]):
            open(config["marker"], "w").close()
            raise RuntimeError("planned failure")
        total = 0.0
        for x, y in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item()
        weights = [p.detach().clone().tolist() for p in model.parameters()]
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "epoch": epoch}, os.path.join(folder, "state.pt"))
            train.report({"epoch": epoch, "loss": total / len(loader), "weights": weights,
                          "rank": context.get_world_rank(), "start": start,
                          "world_size": context.get_world_size()},
                         checkpoint=train.Checkpoint.from_directory(folder))
    if config.get("weights_dir"):           # every rank's final weights, for the test
        import json
        with open(os.path.join(config["weights_dir"], f"rank{context.get_world_rank()}"),
                  "w") as f:
            json.dump(weights, f)
    return weights


# --- out-of-memory protection (tests/integration/test_oom.py) ---------------------

def _count_attempt(folder):
    """Record this attempt with a marker file; return how many came before."""
    before = len(os.listdir(folder))
    open(os.path.join(folder, f"attempt-{before}-{os.getpid()}"), "w").close()
    return before


@zray.remote
def hog_memory(folder, size_bytes, only_first_attempt=False, hold_s=60.0):
    """Allocate and touch ``size_bytes`` (on the first attempt only, if asked),
    then hold it until the memory monitor kills this worker (or ``hold_s``)."""
    before = _count_attempt(folder)
    if only_first_attempt and before > 0:
        return "fits"
    block = np.ones(size_bytes, dtype=np.uint8)    # every page touched
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return f"not killed, holding {block.nbytes} bytes"


@zray.remote
def start_child_then_sleep(marker):
    """Start a long child process, say its pid in ``marker``, then sleep."""
    import subprocess
    child = subprocess.Popen(["sleep", "300"])
    with open(marker + ".tmp", "w") as f:
        f.write(str(child.pid))
    os.rename(marker + ".tmp", marker)
    time.sleep(300)
