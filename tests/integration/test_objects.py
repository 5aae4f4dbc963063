"""The object store: inline and shared-memory objects, zero-copy, freeing."""

import gc
import os
import time

import numpy as np
import pytest

import zray
from tests import tasks as t
from tests.conftest import SHM_DIR, object_segments, wait_for

pytestmark = pytest.mark.timeout(60)


def test_put_get_roundtrip_values(cluster):
    for value in [1, "text", None, {"a": [1, 2]}, b"x" * 10, (1, 2.5)]:
        assert zray.get(zray.put(value)) == value


def test_large_put_is_shared_memory_and_zero_copy(cluster):
    array = np.arange(100 * 1024 * 1024 // 8, dtype=np.float64)   # 100 MB
    ref = zray.put(array)
    assert any(ref.hex() in name for name in object_segments())
    start = time.perf_counter()
    view = zray.get(ref)
    elapsed = time.perf_counter() - start
    assert not view.flags.writeable and not view.flags.owndata
    assert view[12345] == 12345.0
    assert elapsed < 0.05, f"a 100 MB same-host get took {elapsed * 1000:.1f} ms"
    with pytest.raises(ValueError):
        view[0] = 1.0


def test_large_task_result_read_zero_copy(cluster):
    ref = t.make_array.remote(20_000_000, 2.0)
    value = zray.get(ref)
    assert value.shape == (20_000_000,) and value[-1] == 2.0
    assert not value.flags.writeable


def test_segments_freed_when_refs_go(cluster):
    ref = zray.put(np.ones(1_000_000))
    name = next(n for n in object_segments() if ref.hex() in n)
    del ref
    gc.collect()
    assert wait_for(lambda: name not in object_segments())


def test_result_segments_freed_when_refs_go(cluster):
    ref = t.make_array.remote(1_000_000)
    zray.wait([ref])
    hex_id = ref.hex()
    assert wait_for(lambda: any(hex_id in n for n in object_segments()))
    del ref
    assert wait_for(lambda: not any(hex_id in n for n in object_segments()))


def test_dropped_result_of_running_task_is_freed(cluster):
    t.make_array.remote(1_000_000)        # ref dropped at once: result discarded
    zray.get(t.noop.remote())
    time.sleep(0.5)
    assert wait_for(lambda: not object_segments())


def test_put_get_loop_does_not_grow(cluster):
    import psutil
    proc = psutil.Process()
    for _ in range(50):
        zray.get(zray.put(np.ones(1_000_000)))
    gc.collect()
    rss_before = proc.memory_info().rss
    for _ in range(300):
        zray.get(zray.put(np.ones(1_000_000)))   # 8 MB each, 2.4 GB in all
    gc.collect()
    assert wait_for(lambda: len(object_segments()) <= 2)
    assert proc.memory_info().rss - rss_before < 100 * 1024 * 1024


def test_object_contained_in_object_stays_alive(cluster):
    inner = zray.put(np.full(200_000, 7.0))
    outer = zray.put([inner])
    inner_hex = inner.hex()
    del inner
    gc.collect()
    time.sleep(0.3)
    [again] = zray.get(outer)
    assert again.hex() == inner_hex
    assert zray.get(again)[0] == 7.0


def test_ref_returned_from_task(cluster):
    @zray.remote
    def make_ref():
        return zray.put(np.full(200_000, 3.0))

    inner = zray.get(make_ref.remote())
    assert isinstance(inner, zray.ObjectRef)
    assert zray.get(inner)[0] == 3.0


def test_put_of_object_ref_is_rejected(cluster):
    with pytest.raises(TypeError):
        zray.put(zray.put(1))


def test_large_argument_goes_through_the_store(cluster):
    array = np.ones(5_000_000)
    assert zray.get(t.array_sum.remote(array)) == 5_000_000.0


def test_worker_put_and_driver_get(cluster):
    @zray.remote
    def put_inside():
        return [zray.put(np.arange(300_000))]

    [ref] = zray.get(put_inside.remote())
    assert zray.get(ref)[-1] == 299_999


def test_many_small_objects(cluster):
    refs = [zray.put(i) for i in range(5000)]
    assert sum(zray.get(refs)) == sum(range(5000))
    assert os.getpid()


def test_segment_maps_map_once_and_notice_a_segment_made_again(tmp_path):
    from zray.serialization import SegmentMaps, serialize, write_segment
    maps = SegmentMaps(capacity=2)
    path = str(tmp_path / "segment")
    write_segment(path, serialize(np.arange(100_000)))
    first, second = maps.read(path), maps.read(path)
    assert len(maps) == 1 and first.sum() == second.sum() == 4_999_950_000
    assert np.shares_memory(first, second)           # one map, read twice
    os.unlink(path)                                  # removed and made again: new content
    write_segment(path, serialize(np.ones(100_000)))
    assert maps.read(path).sum() == 100_000 and first.sum() == 4_999_950_000
    os.unlink(path)
    maps.sweep()                                     # a removed segment's map is let go
    assert len(maps) == 0
    for name in "abc":                               # at most `capacity` maps are kept
        write_segment(str(tmp_path / name), serialize(np.zeros(20_000)))
        maps.read(str(tmp_path / name))
    assert len(maps) == 2


def test_freed_segments_are_reused_but_never_under_a_live_array(cluster):
    from tests.conftest import zray_segments
    spares = lambda: {n for n in zray_segments() if "_spare" in n}   # noqa: E731
    ref = zray.put(np.full(1_000_000, 7.0))
    held = zray.get(ref)          # a zero-copy view into the segment
    del ref                       # freed, but mapped here: must not be reused
    for _ in range(20):
        assert zray.get(zray.put(np.full(1_000_000, 1.0)))[-1] == 1.0
    assert (held == 7.0).all()
    assert wait_for(lambda: spares())          # unmapped ones were kept for reuse
    time.sleep(0.5)                            # the loop's last frees settle
    before = {os.stat(os.path.join(SHM_DIR, n)).st_ino for n in spares()}
    kept = zray.put(np.full(1_000_000, 3.0))   # written over a spare
    name = next(n for n in object_segments() if kept.hex() in n)
    assert os.stat(os.path.join(SHM_DIR, name)).st_ino in before
    assert zray.get(kept)[0] == 3.0
