"""A large array in the shared-memory object store, read by a task without a copy."""

import numpy as np

import zray as ray

ray.init()

matrix_ref = ray.put(np.random.rand(1000, 1000))


@ray.remote
def process_matrix(m):          # a top-level ObjectRef argument arrives as its value
    return float(m.sum())


print(ray.get(process_matrix.remote(matrix_ref)))
ray.shutdown()
