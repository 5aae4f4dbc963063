"""zray.data's all-to-all operators, aggregates and splits on a local cluster
and on 2 nodes (tests/data_clusters.py), checked against pandas/numpy."""

from __future__ import annotations

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="zray.data needs pyarrow (the data extra)")
pd = pytest.importorskip("pandas", reason="zray.data needs pandas (the data extra)")

import zray  # noqa: E402
import zray as ray  # noqa: E402
from tests.data_clusters import cluster  # noqa: E402,F401  (the fixture)
from zray.data import AggregateFn, Count, Max, Mean, Min, Std, Sum  # noqa: E402

pytestmark = pytest.mark.timeout(60)




@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(7)
    return pd.DataFrame({"k": rng.integers(0, 5, 300), "g": rng.choice(list("xyz"), 300),
                         "v": rng.normal(size=300), "i": np.arange(300)})


@pytest.fixture(scope="module")
def ds(cluster, frame):
    return ray.data.from_pandas(frame).repartition(4).materialize()


def test_random_shuffle_is_a_seeded_permutation(ds, frame):
    first = [r["i"] for r in ds.random_shuffle(seed=11).take_all()]
    again = [r["i"] for r in ds.random_shuffle(seed=11).take_all()]
    other = [r["i"] for r in ds.random_shuffle(seed=12).take_all()]
    assert sorted(first) == list(range(300))
    assert first == again and first != other and first != list(range(300))
    assert ds.random_shuffle(num_blocks=2).materialize().num_blocks() == 2


def test_sort_matches_pandas(ds, frame):
    got = ds.random_shuffle(seed=1).sort("v").to_pandas()
    pd.testing.assert_frame_equal(got, frame.sort_values("v").reset_index(drop=True))
    down = ds.sort("i", descending=True).to_pandas()
    assert list(down["i"]) == list(range(299, -1, -1))
    both = ds.sort(["g", "i"], descending=[True, False]).to_pandas()
    expected = frame.sort_values(["g", "i"], ascending=[False, True]).reset_index(drop=True)
    pd.testing.assert_frame_equal(both, expected)
    with pytest.raises(KeyError, match="nope"):
        ds.sort("nope").take_all()


def test_repartition_keeps_order(ds, frame):
    again = ds.repartition(7)
    assert again.materialize().num_blocks() == 7
    pd.testing.assert_frame_equal(again.to_pandas(), frame)
    shuffled = ds.repartition(3, shuffle=True).to_pandas()
    assert sorted(shuffled["i"]) == list(range(300))


def _sorted(df, keys):
    return df.sort_values(keys).reset_index(drop=True)


def test_groupby_builtin_aggregates(ds, frame):
    # the output comes sorted by key, as Ray's (and pandas') groupby's does
    grouped = frame.groupby("k")["v"]
    got = ds.groupby("k").count().to_pandas()
    assert list(got.columns) == ["k", "count()"]
    assert list(got["k"]) == sorted(frame.k.unique())
    assert list(got["count()"]) == list(frame.groupby("k").size())
    for method, column in (("sum", "sum(v)"), ("min", "min(v)"), ("max", "max(v)"),
                           ("mean", "mean(v)"), ("std", "std(v)")):
        got = getattr(ds.groupby("k"), method)("v").to_pandas()
        assert list(got["k"]) == sorted(frame.k.unique())
        expected = getattr(grouped, method)().to_numpy()
        np.testing.assert_allclose(got[column].to_numpy(), expected, rtol=1e-12)


def test_groupby_multiple_keys_and_aggregations(ds, frame):
    got = ds.groupby(["k", "g"]).aggregate(Count(), Sum("i"), Mean("v")).to_pandas()
    expected = frame.groupby(["k", "g"]).agg(c=("i", "size"), s=("i", "sum"),
                                             m=("v", "mean")).reset_index()
    assert list(zip(got["k"], got["g"])) == list(zip(expected["k"], expected["g"]))
    assert list(got["count()"]) == list(expected["c"])
    assert list(got["sum(i)"]) == list(expected["s"])
    np.testing.assert_allclose(got["mean(v)"], expected["m"], rtol=1e-12)


def test_groupby_custom_aggregate_fn(ds, frame):
    span = AggregateFn(init=lambda k: [None, None],
                       accumulate_row=lambda a, r: [r["i"] if a[0] is None else min(a[0], r["i"]),
                                                    r["i"] if a[1] is None else max(a[1], r["i"])],
                       merge=lambda a, b: [min(a[0], b[0]), max(a[1], b[1])],
                       finalize=lambda a: a[1] - a[0], name="span")
    got = ds.groupby("g").aggregate(span).to_pandas()
    expected = frame.groupby("g")["i"].agg(lambda s: s.max() - s.min())
    assert list(got["g"]) == list(expected.index)
    assert list(got["span"]) == list(expected)
    assert ds.aggregate(span) == {"span": 299}


def test_map_groups(ds, frame):
    def normalize(group):
        return {"k": group["k"], "centered": group["v"] - group["v"].mean()}
    got = ds.groupby("k").map_groups(normalize).to_pandas()
    assert list(got["k"]) == sorted(frame.k)          # groups come in key order
    got = _sorted(got, ["k", "centered"])
    expected = frame.assign(centered=frame.v - frame.groupby("k").v.transform("mean"))
    expected = _sorted(expected[["k", "centered"]], ["k", "centered"])
    np.testing.assert_allclose(got["centered"], expected["centered"], atol=1e-12)
    assert list(got["k"]) == list(expected["k"])
    with pytest.raises(KeyError, match="nope"):
        ds.groupby("nope").count().take_all()


def test_groupby_none_is_one_group(ds, frame):
    got = ds.groupby(None).aggregate(Count(), Sum("i"), Std("v"), Max("g")).take_all()
    assert got == [{"count()": 300, "sum(i)": frame.i.sum(),
                    "std(v)": pytest.approx(frame.v.std(), rel=1e-12), "max(g)": "z"}]
    assert ds.groupby(None).mean("v").take_all() == [
        {"mean(v)": pytest.approx(frame.v.mean(), rel=1e-12)}]
    assert ds.groupby(None).count().take_all() == [{"count()": 300}]
    whole = ds.groupby(None).map_groups(lambda b: {"rows": np.array([len(b["i"])]),
                                                   "total": np.array([b["i"].sum()])})
    assert whole.take_all() == [{"rows": 300, "total": frame.i.sum()}]


def test_groupby_string_keys_and_many_partitions(ds, frame):
    got = ds.groupby("g", num_partitions=3).sum("v").to_pandas()
    expected = frame.groupby("g").v.sum()
    assert list(got["g"]) == list(expected.index)
    np.testing.assert_allclose(got["sum(v)"], expected.to_numpy(), rtol=1e-12)
    with pytest.raises(KeyError, match="nope"):
        ds.groupby("k").sum("nope").take_all()


def test_global_aggregates_and_unique(ds, frame):
    assert ds.sum("i") == frame.i.sum()
    assert ds.min("v") == frame.v.min() and ds.max("v") == frame.v.max()
    assert ds.mean("v") == pytest.approx(frame.v.mean(), rel=1e-12)
    assert ds.std("v") == pytest.approx(frame.v.std(), rel=1e-12)
    assert ds.std("v", ddof=0) == pytest.approx(frame.v.std(ddof=0), rel=1e-12)
    assert ds.sum(["i", "k"]) == {"sum(i)": frame.i.sum(), "sum(k)": frame.k.sum()}
    assert ds.aggregate(Count(), Max("k"), Min("g"), Std("i")) == {
        "count()": 300, "max(k)": frame.k.max(), "min(g)": "x",
        "std(i)": pytest.approx(frame.i.std())}
    assert ds.unique("g") == sorted(frame.g.unique())
    assert ray.data.range(0).sum("id") is None


def test_split_and_split_at_indices(ds, frame):
    parts = ds.split(3)
    assert [p.count() for p in parts] == [100, 100, 100]
    assert [r["i"] for r in parts[1].take_all()] == list(range(100, 200))
    uneven = ray.data.range(10, override_num_blocks=3).split(3, equal=True)
    assert [[r["id"] for r in p.take_all()] for p in uneven] == [[0, 1, 2], [3, 4, 5],
                                                                  [6, 7, 8]]
    a, b, c = ds.split_at_indices([10, 205])
    assert [a.count(), b.count(), c.count()] == [10, 195, 95]
    pd.testing.assert_frame_equal(c.to_pandas(), frame.iloc[205:].reset_index(drop=True))


def test_train_test_split(ds, frame):
    train, test = ds.train_test_split(0.25)
    assert train.count() == 225 and test.count() == 75
    assert [r["i"] for r in test.take_all()] == list(range(225, 300))
    train, test = ds.train_test_split(30, shuffle=True, seed=5)
    ids = [r["i"] for r in train.take_all()] + [r["i"] for r in test.take_all()]
    assert test.count() == 30 and sorted(ids) == list(range(300))


@zray.remote
class Consumer:
    def consume(self, iterator, epochs):
        seen = []
        for _ in range(epochs):
            seen.append([int(x) for b in iterator.iter_batches(batch_size=7)
                         for x in b["id"]])
        return seen


def test_streaming_split_feeds_actors(cluster):
    ds = ray.data.range(50, override_num_blocks=5).map(lambda r: {"id": r["id"] * 2})
    its = ds.streaming_split(2, equal=True)
    consumers = [Consumer.options(num_cpus=0).remote() for _ in its]
    results = zray.get([c.consume.remote(it, 2) for c, it in zip(consumers, its)])
    for epoch in range(2):
        got = results[0][epoch] + results[1][epoch]
        assert sorted(got) == list(range(0, 100, 2))
        assert len(results[0][epoch]) == len(results[1][epoch]) == 25
    its = ray.data.range(20, override_num_blocks=4).streaming_split(2)
    rows = [[r["id"] for r in it.iter_rows()] for it in its]
    assert sorted(rows[0] + rows[1]) == list(range(20))
