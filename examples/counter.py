"""The seed example: a stateful actor."""

import zray as ray

ray.init()


@ray.remote
class Counter:
    def __init__(self):
        self.count = 0

    def increment(self):
        self.count += 1

    def get_count(self):
        return self.count


counter = Counter.remote()
ray.get(counter.increment.remote())
ray.get(counter.increment.remote())
print(ray.get(counter.get_count.remote()))   # 2
ray.shutdown()
