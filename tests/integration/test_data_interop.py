"""joblib and Dask on zray (``zray.util.joblib``, ``zray.util.dask``), on a
local cluster and on 2 nodes, checked against the same work done serially."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("pyarrow", reason="the data clusters preload pyarrow")
pytest.importorskip("pandas", reason="the data clusters preload pandas")

import zray  # noqa: E402
from tests.data_clusters import cluster  # noqa: E402,F401  (the fixture)

pytestmark = pytest.mark.timeout(90)


def _square_and_pid(x):
    return x * x, os.getpid()


def _fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x


def test_joblib_parallel_runs_as_zray_tasks(cluster):
    joblib = pytest.importorskip("joblib")
    from zray.util.joblib import register_zray
    register_zray()
    with joblib.parallel_backend("zray"):
        out = joblib.Parallel(n_jobs=-1)(joblib.delayed(_square_and_pid)(i)
                                         for i in range(200))
    assert [v for v, _ in out] == [i * i for i in range(200)]
    assert os.getpid() not in {pid for _, pid in out}      # ran in workers
    with joblib.parallel_backend("zray", n_jobs=2):
        assert joblib.Parallel()(joblib.delayed(abs)(-i) for i in range(5)) == \
            list(range(5))
        with pytest.raises(ValueError, match="bad input 3"):
            joblib.Parallel()(joblib.delayed(_fail_on)(i, 3) for i in range(6))


def test_dask_graphs_on_zray(cluster):
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    from zray.util.dask import zray_dask_get
    x = np.arange(10_000, dtype=np.float64).reshape(100, 100)
    arr = da.from_array(x, chunks=25)
    got = (arr @ arr.T + 1).sum(axis=0).compute(scheduler=zray_dask_get)
    np.testing.assert_allclose(got, (x @ x.T + 1).sum(axis=0), rtol=1e-12)
    with dask.config.set(scheduler=zray_dask_get):
        a, b = dask.compute(arr.mean(), arr.max())
    assert a == x.mean() and b == x.max()
    delayed_sum = dask.delayed(sum)([dask.delayed(abs)(-i) for i in range(50)])
    assert delayed_sum.compute(scheduler=zray_dask_get) == sum(range(50))


def test_dask_dataframe_groupby_on_zray(cluster):
    pytest.importorskip("dask")
    dd = pytest.importorskip("dask.dataframe")
    import pandas as pd
    from zray.util.dask import zray_dask_get
    frame = pd.DataFrame({"k": np.arange(1000) % 7, "v": np.arange(1000) * 0.5})
    ddf = dd.from_pandas(frame, npartitions=4)
    got = ddf.groupby("k").v.sum().compute(scheduler=zray_dask_get)
    pd.testing.assert_series_equal(got.sort_index(), frame.groupby("k").v.sum())


def test_dask_errors_reach_the_caller(cluster):
    dask = pytest.importorskip("dask")
    from zray.util.dask import zray_dask_get
    broken = dask.delayed(_fail_on)(dask.delayed(abs)(-4), 4)
    with pytest.raises(ValueError, match="bad input 4"):
        broken.compute(scheduler=zray_dask_get)
    assert zray.is_initialized()
