"""Data processing fanned out over tasks: [process_data.remote(d) for d in data]."""

import zray as ray

ray.init()


@ray.remote
def process_data(record):
    words = record.split()
    return {"words": len(words), "longest": max(words, key=len)}


data = [
    "zray runs ray programs on zeromq",
    "tasks actors and objects",
    "a head node records lineage so lost results can be recomputed",
]
results = ray.get([process_data.remote(d) for d in data])
for record, result in zip(data, results):
    print(f"{result['words']:2d} words, longest {result['longest']!r}: {record}")
ray.shutdown()
