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
