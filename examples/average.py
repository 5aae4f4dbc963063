"""The seed example: an average computed by a remote task."""

import zray as ray

ray.init(num_cpus=4, num_gpus=1)   # works with no GPU present


@ray.remote
def calculate_average(numbers):
    return sum(numbers) / len(numbers)


print(ray.get(calculate_average.remote([1, 2, 3, 4, 5])))   # 3.0
ray.shutdown()
