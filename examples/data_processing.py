"""zray.data on the embedded cluster: read, transform, aggregate, write.

    python examples/data_processing.py

Runs in a few seconds on a laptop: builds a small Parquet dataset, reads it
back with a projection and a pushed-down filter, transforms it with a
function and with a callable class on a pool of actors, groups, sorts and
writes the result.
"""

import os
import tempfile

import numpy as np

import zray as ray


class Scale:
    """A stateful transform: built once per actor, then called on batches."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, batch):
        batch["amount"] = batch["amount"] * self.factor
        return batch


def main():
    ray.init(num_cpus=2, _system_config={"worker_preload_modules": "numpy,pyarrow,pandas"})
    with tempfile.TemporaryDirectory() as root:
        rng = np.random.default_rng(0)
        sales = ray.data.from_items([
            {"store": f"s{int(rng.integers(0, 4))}", "amount": float(rng.integers(1, 100)),
             "day": int(day)} for day in range(1000)])
        sales.repartition(4).write_parquet(os.path.join(root, "sales"))

        import pyarrow.dataset as pds
        ds = ray.data.read_parquet(os.path.join(root, "sales"), columns=["store", "amount"],
                                   filter=pds.field("amount") > 10)
        ds = (ds.map_batches(Scale, fn_constructor_args=(1.1,), concurrency=2,
                               num_cpus=0.5)
                .filter(lambda row: row["store"] != "s3")
                .materialize())   # run the pool once; the steps below reuse its blocks
        print("rows after the filters:", ds.count())
        totals = ds.groupby("store").sum("amount").sort("store")
        totals.show()
        print("mean amount:", round(ds.mean("amount"), 3))
        for batch in ds.iter_batches(batch_size=256, batch_format="pandas"):
            print("a batch of", len(batch), "rows; first:", batch.iloc[0].to_dict())
            break
        totals.write_csv(os.path.join(root, "totals"))
        print("written:", sorted(os.listdir(os.path.join(root, "totals"))))
        print(totals.stats())
    ray.shutdown()


if __name__ == "__main__":
    main()
