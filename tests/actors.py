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
