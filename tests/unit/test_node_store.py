"""ObjectStore (zray/node/store.py): the bound, spilling order, pins, waiting."""

from __future__ import annotations

import os

import pytest

from zray.node.spill import remove_dead_spill_dirs
from zray.node.store import ObjectState, ObjectStore

MB = 2 ** 20


class FakeFiles:
    """Segments and spill files as sets; pins by hand."""

    spill_dir = "/spill"

    def __init__(self):
        self.segments, self.spilled, self.pinned, self.wanted = {}, {}, set(), set()
        self.spares = 0
        self.behind = []

    def held_bytes(self):
        return self.spares

    def drop_spares(self):
        self.spares = 0

    def segment_size(self, object_id):
        return self.segments.get(object_id)

    def in_use(self, object_id):
        return object_id in self.pinned

    def mark_wanted(self, object_id):
        self.wanted.add(object_id)

    def spill(self, object_id, spill_path, aside=False, recycle=False):
        path = spill_path or f"/spill/{object_id.hex()}" + (".now" if aside else "")
        self.spilled[path] = self.segments.pop(object_id)
        return path

    def restore(self, object_id, spill_path):
        self.segments[object_id] = self.spilled[spill_path]

    def drop_recycled(self):
        pass

    def recycled_to_spares(self, size):
        pass

    def delete_spill(self, spill_path):
        self.spilled.pop(spill_path, None)

    def write_behind(self, object_id):
        self.behind.append(object_id)

    def written_behind(self):
        done = [(o, f"/spill/{o.hex()}", None) for o in self.behind]
        for object_id, path, _ in done:
            self.spilled[path] = self.spilled.get(path + ".now") or self.segments[object_id]
        self.behind = []
        return done

    def pinned_detail(self, object_ids):
        return ", ".join(f"{o.hex()} by pid 7" for o in object_ids if o in self.pinned)


def oid(n: int) -> bytes:
    return bytes([n]) * 18


def put(store, files, n, size=50 * MB, now=0.0, who=b"w"):
    store.request("write", oid(n), size, who, now)
    reply = store.replies.pop()
    if reply[3] is None:
        files.segments[oid(n)] = size
        store.written(oid(n), size, now, who)
    store.validate()
    return reply


def test_writes_past_the_bound_spill_the_oldest_first():
    files = FakeFiles()
    store = ObjectStore(b"n" * 16, 200 * MB, 30.0, files)
    for n in range(6):
        assert put(store, files, n)[3] is None
        assert store.used_bytes() <= 200 * MB
    assert [e.object_id for e in store.entries.values()
            if e.state is ObjectState.SPILLED] == [oid(0), oid(1)]
    assert store.stats()["spilled_objects"] == 2


def test_pinned_objects_stay_and_a_write_waits_then_fails_naming_them():
    files = FakeFiles()
    store = ObjectStore(b"n" * 16, 100 * MB, 5.0, files)
    put(store, files, 1, 60 * MB)
    files.pinned.add(oid(1))
    store.request("write", oid(2), 60 * MB, b"w", 1.0)
    assert not store.replies and oid(1) in files.wanted       # waits, asks to let go
    store.tick(5.9)
    assert not store.replies
    store.tick(6.1)
    kind, who, object_id, error, _ = store.replies.pop()
    assert (kind, object_id) == ("write", oid(2))
    assert "pinned" in error and oid(1).hex() in error and "100.0 MiB" in error
    assert oid(1) in files.segments                            # nothing lost
    store.validate()


def test_a_waiting_write_goes_ahead_once_the_pin_is_gone():
    files = FakeFiles()
    store = ObjectStore(b"n" * 16, 100 * MB, 30.0, files)
    put(store, files, 1, 60 * MB)
    files.pinned.add(oid(1))
    store.request("write", oid(2), 60 * MB, b"w", 1.0)
    files.pinned.clear()
    store.tick(1.1)
    assert store.replies.pop()[3] is None
    assert store.entries[oid(1)].state is ObjectState.SPILLED


def test_past_most_of_the_bound_objects_are_written_behind_then_dropped_at_once():
    files = FakeFiles()
    store = ObjectStore(b"n" * 16, 200 * MB, 30.0, files)
    for n in range(4):
        put(store, files, n, 45 * MB)
    assert files.behind == [oid(0), oid(1)]          # 180 MB > 80%: down to 60%
    store.tick(0.5)
    assert store.entries[oid(0)].spill_path and oid(0) in files.segments
    spilled_before = dict(files.spilled)
    put(store, files, 4, 45 * MB, now=1.0)
    assert store.entries[oid(0)].state is ObjectState.SPILLED
    assert oid(0) not in files.segments and files.spilled == spilled_before   # no write
    store.validate()


def test_credit_lets_a_writer_skip_the_round_trip_and_expires():
    files = FakeFiles()
    store = ObjectStore(b"n" * 16, 1024 * MB, 30.0, files)
    assert put(store, files, 1, 1 * MB)[4] == 65 * MB          # 64 MiB of credit
    files.segments[oid(2)] = MB
    store.written(oid(2), MB, 1.0, b"w")                        # on credit: no request
    assert store.entries[oid(2)].state is ObjectState.IN_MEMORY
    assert store.used_bytes() == 65 * MB
    store.validate()
    store.tick(20.0)                                            # the rest expires
    assert store.used_bytes() == 2 * MB
    store.validate()


def test_larger_than_the_bound_fails_at_once():
    store = ObjectStore(b"n" * 16, 100 * MB, 30.0, FakeFiles())
    store.request("write", oid(1), 101 * MB, b"w", 0.0)
    assert "larger object_store_memory" in store.replies.pop()[3]


def test_restore_makes_room_and_holds_for_its_reader_until_its_next_request():
    files = FakeFiles()
    store = ObjectStore(b"n" * 16, 100 * MB, 30.0, files)
    put(store, files, 1)
    put(store, files, 2)
    put(store, files, 3)                                       # 1 spilled
    store.request("pull", oid(1), 50 * MB, b"reader", 1.0, item="item")
    assert store.replies.pop() == ("done", b"reader", oid(1), None, "item")
    assert oid(1) in files.segments and store.entries[oid(1)].state is ObjectState.IN_MEMORY
    put(store, files, 4, now=1.5, who=b"other")                # 1 is held: 2/3 go
    assert store.entries[oid(1)].state is ObjectState.IN_MEMORY
    store.request("pull", oid(2), 50 * MB, b"reader", 2.0, item="item")
    assert store.replies.pop()[0] == "done"                    # 1 was let go for it
    store.validate()


def test_freed_objects_lose_their_spill_files():
    files = FakeFiles()
    store = ObjectStore(b"n" * 16, 100 * MB, 30.0, files)
    for n in range(3):
        put(store, files, n)
    assert files.spilled
    for n in range(3):
        store.freed(oid(n), 1.0)
    assert not files.spilled and not store.entries
    store.validate()


def test_spares_are_dropped_before_anything_spills():
    files = FakeFiles()
    store = ObjectStore(b"n" * 16, 100 * MB, 30.0, files)
    files.spares = 60 * MB
    put(store, files, 1)
    assert files.spares == 0 and not files.spilled


def test_dead_nodes_spill_folders_are_removed(tmp_path):
    dead = tmp_path / "zray-spill-dead"
    alive = tmp_path / "zray-spill-alive"
    for folder, pid in ((dead, 2 ** 22 + 12345), (alive, os.getpid())):
        folder.mkdir()
        (folder / "owner.pid").write_text(str(pid))
        (folder / "obj").write_bytes(b"x")
    assert remove_dead_spill_dirs(str(tmp_path)) == 1
    assert not dead.exists() and alive.exists()


@pytest.mark.parametrize("text", ['{"type": "s3"}', "not json",
                                  '{"type": "filesystem", "params": {}}'])
def test_bad_spilling_configs_are_refused(text):
    from zray.config import Config
    with pytest.raises(ValueError, match="object_spilling_config"):
        Config.from_system_config({"object_spilling_config": text})


def test_ray_spilling_config_sets_the_directory():
    import json
    from zray.config import Config
    config = Config.from_system_config({"object_spilling_config": json.dumps(
        {"type": "filesystem", "params": {"directory_path": "/mnt/spill"}})})
    assert config.object_spilling_directory == "/mnt/spill"


def test_a_restore_writes_into_the_pages_of_the_segment_spilled_for_it(tmp_path):
    from zray.node.spill import SpillFiles
    from zray.serialization import SpareSegments
    shm, spill = tmp_path / "shm", tmp_path / "spill"
    shm.mkdir()
    spill.mkdir()
    node = b"n" * 16
    files = SpillFiles(str(shm), node, str(spill), SpareSegments(str(shm), node, 0), None)
    old, new = b"o" * 16, b"w" * 16
    with open(files.segment(old), "wb") as f:
        f.write(b"x" * 5000)
    with open(files.segment(new), "wb") as f:
        f.write(bytes(range(256)) * 10)
    new_spill = files.spill(new, None)                   # spilled earlier, plainly
    pages = os.stat(files.segment(old)).st_ino
    assert not os.path.exists(files.segment(new))
    files.spill(old, None, recycle=True)                 # spilled now, to make room
    assert len(files.recycled) == 1 and not os.path.exists(files.segment(old))
    files.restore(new, new_spill)
    with open(files.segment(new), "rb") as f:
        assert f.read() == bytes(range(256)) * 10        # exact size, exact bytes
    assert os.stat(files.segment(new)).st_ino == pages   # in the recycled file
    assert files.recycled == []
    with open(files.segment(b"z" * 16), "wb") as f:
        f.write(b"z" * 10)
    files.spill(b"z" * 16, None, recycle=True)           # kept, but no restore took it
    files.drop_recycled()
    assert sorted(os.listdir(shm)) == [os.path.basename(files.segment(new))]
    files.close()


def test_a_spilled_segment_someone_mapped_meanwhile_is_never_recycled(tmp_path):
    """The store finds a segment unused, then copies it to disk (tens of ms):
    a reader that maps it meanwhile must keep its bytes, so its pages are not
    recycled for a restore."""
    import mmap
    from zray.node.spill import SpillFiles
    from zray.serialization import SpareSegments
    shm, spill = tmp_path / "shm", tmp_path / "spill"
    shm.mkdir()
    spill.mkdir()
    node = b"n" * 16
    files = SpillFiles(str(shm), node, str(spill), SpareSegments(str(shm), node, 0), None)
    read = b"r" * 16
    with open(files.segment(read), "wb") as f:
        f.write(b"a" * 8192)
    with open(files.segment(read), "rb") as f:           # the reader maps it
        view = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        files.spill(read, None, recycle=True)
        assert files.recycled == []                       # not kept for a restore
        assert view[:] == b"a" * 8192                     # the reader's bytes, intact
    finally:
        view.close()
    assert os.listdir(shm) == []
    files.close()

