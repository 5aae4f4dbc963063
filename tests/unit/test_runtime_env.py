"""runtime_env packing rules and per-environment worker pools (no sockets)."""

from __future__ import annotations

import io
import os
import zipfile

import pytest

from zray import ids
from zray.config import Config
from zray.node.state import NodeManagerState
from zray.protocol import Msg
from zray.runtime_env.keys import code_env_key, digest_of, uri_for
from zray.runtime_env.packaging import content_hash, excluded, package_files, write_zip
from zray.runtime_env.setup import ensure_package
from zray.task_spec import TaskSpec

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("rel, is_dir, patterns, expected", [
    ("a.log", False, ["*.log"], True),
    ("deep/x/a.log", False, ["*.log"], True),
    ("build", True, ["build/"], True),
    ("build", False, ["build/"], False),
    ("src/build", True, ["/build"], False),
    ("build", True, ["/build"], True),
    ("data/raw/x.csv", False, ["data/raw/*"], True),
    ("keep.log", False, ["*.log", "!keep.log"], False),
])
def test_gitignore_style_patterns(rel, is_dir, patterns, expected):
    assert excluded(rel, is_dir, [("", p) for p in patterns]) is expected


def test_files_honour_excludes_nested_gitignore_and_skip_git(tmp_path):
    for rel in ("a.py", "sub/b.py", "sub/b.tmp", "sub/.gitignore", "x.bin", ".git/HEAD",
                "big/blob"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("*.tmp\n" if rel.endswith(".gitignore") else rel)
    files = package_files(str(tmp_path), ["*.bin", "big/"])
    assert files == ["a.py", "sub/.gitignore", "sub/b.py"]


def test_content_hash_follows_content_and_names(tmp_path):
    (tmp_path / "m.py").write_text("A = 1")
    first = content_hash(str(tmp_path), ["m.py"], "")
    assert first == content_hash(str(tmp_path), ["m.py"], "")
    assert first != content_hash(str(tmp_path), ["m.py"], "pkg")
    (tmp_path / "m.py").write_text("A = 2")
    assert first != content_hash(str(tmp_path), ["m.py"], "")


def test_package_unpacks_once_and_refuses_unsafe_paths(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text("A = 1")
    buffer = io.BytesIO()
    write_zip(buffer, str(tmp_path / "src"), ["m.py"], "")
    fetched = []

    def fetch(digest):
        fetched.append(digest)
        return buffer.getvalue()
    uri = uri_for("ab12")
    folder = ensure_package(uri, str(tmp_path / "cache"), fetch)
    assert ensure_package(uri, str(tmp_path / "cache"), fetch) == folder
    assert fetched == ["ab12"] and (tmp_path / "cache" / "ab12" / "m.py").exists()
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.py", "x")
    with pytest.raises(ValueError, match="unsafe path"):
        ensure_package(uri_for("cd34"), str(tmp_path / "cache"), lambda d: evil.getvalue())
    with pytest.raises(ValueError, match="not a zray package URI"):
        digest_of("s3://bucket/x.zip")


def _spec(runtime_env=None):
    return TaskSpec(ids.new_task_id(), b"job", "f", b"f", b"", (), (), 1, {"CPU": 1.0},
                    3, False, runtime_env, 0, function_blob=b"blob")


def test_workers_are_pooled_per_code_environment():
    state = NodeManagerState(b"n" * 16, {"CPU": 2.0}, Config(
        lease_workers=False, prestart_workers=-1, worker_prefetch=1))
    state.start(0.0)
    spawned = [c[1] for c in state.commands if c[0] == "spawn"]
    state.commands = []
    for i, worker_id in enumerate(spawned):
        state.on_worker_started(worker_id, 100 + i)
        state.on_worker_hello(worker_id, 100 + i, 0.0)
    env_x = {"working_dir": uri_for("aa"), "env_vars": {"A": "1"}}
    first = _spec(env_x)
    state.on_execute_tasks([first], 0.0)
    sent = state.out.drain()
    worker_x = [k[0] for k in sent if k[1] is Msg.EXECUTE_TASKS][0]
    state.on_task_done(worker_x, first.task_id, 0.1)
    state.out.drain()
    # the other idle worker is fresh: a plain task goes there, never to worker_x
    plain = _spec()
    state.on_execute_tasks([plain], 0.2)
    targets = [k[0] for k in state.out.drain() if k[1] is Msg.EXECUTE_TASKS]
    assert targets and worker_x not in targets
    # env_vars alone do not split pools; another working_dir needs a new worker
    again = _spec({"working_dir": uri_for("aa")})
    state.on_execute_tasks([again], 0.3)
    assert [k[0] for k in state.out.drain() if k[1] is Msg.EXECUTE_TASKS] == [worker_x]
    assert code_env_key(env_x) == code_env_key({"working_dir": uri_for("aa")})
    state.on_task_done(worker_x, again.task_id, 0.35)
    state.on_task_done(targets[0], plain.task_id, 0.35)
    state.out.drain()
    state.on_execute_tasks([_spec({"working_dir": uri_for("bb")})], 0.4)
    out = state.out.drain()
    assert not [k for k in out if k[1] is Msg.EXECUTE_TASKS]
    assert len([k for k in out if k[1] is Msg.SHUTDOWN]) == 1    # the pool is full: one goes
    assert len([c for c in state.commands if c[0] == "spawn"]) == 1


def test_incompressible_files_are_stored_not_deflated(tmp_path):
    (tmp_path / "random.bin").write_bytes(os.urandom(200_000))
    (tmp_path / "text.py").write_text("VALUE = 1\n" * 20_000)
    buffer = io.BytesIO()
    write_zip(buffer, str(tmp_path), ["random.bin", "text.py"], "pkg")
    with zipfile.ZipFile(buffer) as zf:
        kinds = {info.filename: info.compress_type for info in zf.infolist()}
        assert zf.read("pkg/random.bin") == (tmp_path / "random.bin").read_bytes()
    assert kinds == {"pkg/random.bin": zipfile.ZIP_STORED,
                     "pkg/text.py": zipfile.ZIP_DEFLATED}
