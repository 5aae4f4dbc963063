"""Actor classes shared by the actor tests (importable by workers)."""

import asyncio
import os
import threading
import time

import zray


@zray.remote
class Counter:
    def __init__(self, start=0):
        self.count = start

    def increment(self, by=1):
        self.count += 1 * by
        return self.count

    def get_count(self):
        return self.count

    def pid(self):
        return os.getpid()

    def fail(self, message):
        raise KeyError(message)

    def exit(self):
        zray.actor.exit_actor()

    @zray.method(num_returns=2)
    def pair(self):
        return self.count, -self.count

    def sleep(self, seconds):
        time.sleep(seconds)
        return seconds


@zray.remote
class Recorder:
    """Records the order calls arrive in."""

    def __init__(self):
        self.seen = []

    def record(self, item):
        self.seen.append(item)

    def items(self):
        return list(self.seen)


@zray.remote
class BrokenConstructor:
    def __init__(self):
        raise RuntimeError("constructor exploded")

    def hello(self):
        return "never"


@zray.remote
class AsyncWorker:
    def __init__(self):
        self.active = 0
        self.peak = 0

    async def wait_then(self, seconds, value):
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(seconds)
        self.active -= 1
        return value

    async def get_peak(self):
        return self.peak


@zray.remote
class ThreadedWorker:
    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def busy(self, seconds):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(seconds)
        with self.lock:
            self.active -= 1
        return True

    def get_peak(self):
        return self.peak


@zray.remote
def call_counter(counter, times):
    return zray.get([counter.increment.remote() for _ in range(times)])[-1]


@zray.remote
class Forwarder:
    def forward(self, counter):
        return zray.get(counter.increment.remote())


# --- compatibility (tests/test_compat.py) -------------------------------------------

@zray.remote
class Signatures:
    """Methods of every shape, for the argument checks at .remote() time."""

    def __init__(self, start, *, step=1):
        self.value = start
        self.step = step

    def add(self, amount, times=1):
        self.value += amount * times * self.step
        return self.value

    def keyword_only(self, *, name):
        return name

    def anything(self, *args, **kwargs):
        return len(args) + len(kwargs)

    @staticmethod
    def double(x):
        return 2 * x

    @classmethod
    def kind(cls, suffix):
        return cls.__name__ + suffix


class Grandparent:
    GRANDPARENT = 2

    @staticmethod
    def grandparent_static():
        return 1

    def inherited(self):
        return "from Grandparent"


class Parent(Grandparent):
    PARENT = 6

    @classmethod
    def parent_class_method(cls):
        return cls.__name__


@zray.remote
class WithClassAttributes(Parent):
    """Class attributes, static and class methods, and inherited ones, used on
    the actor class itself (as Ray's tests do) and remotely."""

    X = 3

    @staticmethod
    def static_f():
        return WithClassAttributes.X + WithClassAttributes.GRANDPARENT

    @classmethod
    def class_f(cls):
        return cls.PARENT

    def g(self):
        return (WithClassAttributes.X, WithClassAttributes.static_f(),
                WithClassAttributes.class_f(), WithClassAttributes.grandparent_static())


class PlainBase:
    def __init__(self, start=0):
        self.value = start

    def get(self):
        return self.value


RemoteBase = zray.remote(PlainBase)


@zray.remote
class SubclassOfTheUnderlyingClass(PlainBase):
    def doubled(self):
        return 2 * self.get()


@zray.remote
class LeavesAMark:
    """Registers an atexit handler that writes ``path``; exit() ends the actor."""

    def __init__(self, path):
        import atexit

        def mark():
            with open(path, "w") as f:
                f.write(str(os.getpid()))
        atexit.register(mark)

    def exit(self):
        zray.actor.exit_actor()

    def pid(self):
        return os.getpid()


@zray.remote
class AsyncLeavesAMark:
    def __init__(self, path):
        import atexit
        atexit.register(lambda: open(path, "w").write("async"))

    async def exit(self):
        zray.actor.exit_actor()

    async def pid(self):
        return os.getpid()


@zray.remote
class ThreadCounts:
    def read(self):
        return [os.environ.get(name) for name in
                ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")]


@zray.remote
class EnvReader:
    def read(self, names):
        return [os.environ.get(n) for n in names]


# --- used by test_generators.py -------------------------------------------------------

@zray.remote
class Streamer:
    def __init__(self):
        self.calls = 0

    def count(self, n):
        self.calls += 1
        for i in range(n):
            yield i

    def count_then_wait(self, marker, started):
        yield "first"
        open(started, "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield "second"

    def count_then_die(self, n, marker):
        """Yield n items, then die once the caller has them (it makes ``marker``)."""
        for i in range(n):
            yield i
        deadline = time.monotonic() + 30
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(9)

    def count_die_once(self, n, marker):
        first = not os.path.exists(marker)
        for i in range(n):
            if first and i == n // 2:
                open(marker, "w").close()
                os._exit(9)
            yield i

    def count_then_raise(self, n):
        for i in range(n):
            yield i
        raise KeyError("actor generator failed")

    def count_forever(self, limit_s=60):
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < limit_s:
            yield i
            i += 1
            time.sleep(0.01)

    @zray.method(num_returns="dynamic")
    def split(self, n):
        for i in range(n):
            yield i


@zray.remote
class AsyncStreamer:
    async def count(self, n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def count_forever(self, started):
        i = 0
        while True:
            yield i
            i += 1
            if i == 1:
                open(started, "w").close()
            await asyncio.sleep(0.01)

    async def ping(self):
        return "pong"


@zray.remote(max_concurrency=4)
class ThreadedStreamer:
    def count(self, n):
        for i in range(n):
            yield i


@zray.remote
class ExitingStreamer:
    def count_then_exit(self, n):
        for i in range(n):
            yield i
        zray.actor.exit_actor()


# --- collectives (tests/test_collective.py) ------------------------------------------

@zray.remote(num_cpus=0)
class CollectiveMember:
    """One rank of a collective group; each method runs one operation on an
    array it builds from its rank, and returns the result."""

    def __init__(self, rank):
        self.rank = rank

    def join(self, world_size, group_name, backend="zmq"):
        from zray.util import collective as col
        col.init_collective_group(world_size, self.rank, backend=backend,
                                  group_name=group_name)
        return col.get_rank(group_name), col.get_collective_group_size(group_name)

    def run(self, operation, group_name, size=10, **kwargs):
        import numpy as np
        from zray.util import collective as col
        array = np.arange(size, dtype=np.float64) + self.rank * 100
        if operation == "allgather":
            outputs = [np.zeros(size) for _ in range(col.get_collective_group_size(group_name))]
            col.allgather(outputs, array, group_name=group_name)
            return outputs
        if operation == "barrier":
            col.barrier(group_name)
            return None
        getattr(col, operation)(array, group_name=group_name, **kwargs)
        return array

    def exchange(self, group_name, peer):
        """Point to point: the lower rank sends, the higher receives."""
        import numpy as np
        from zray.util import collective as col
        array = np.full(4, float(self.rank))
        if self.rank < peer:
            col.send(array, peer, group_name)
        else:
            col.recv(array, peer, group_name)
        return array

    def leave(self, group_name):
        from zray.util import collective as col
        col.destroy_collective_group(group_name)
        return col.is_group_initialized(group_name)


@zray.remote(num_cpus=0)
class TorchCollectiveMember:
    """A rank of a gloo group (torch tensors) or a zmq group given torch tensors."""

    def __init__(self, rank):
        self.rank = rank

    def join(self, world_size, group_name, backend):
        from zray.util import collective as col
        col.init_collective_group(world_size, self.rank, backend=backend,
                                  group_name=group_name)

    def allreduce_and_broadcast(self, group_name):
        import torch
        from zray.util import collective as col
        summed = torch.arange(6, dtype=torch.float32) + self.rank
        col.allreduce(summed, group_name=group_name)
        copied = torch.full((3,), float(self.rank))
        col.broadcast(copied, src_rank=1, group_name=group_name)
        col.barrier(group_name)
        return summed.tolist(), copied.tolist()

    def leave(self, group_name):
        from zray.util import collective as col
        col.destroy_collective_group(group_name)
