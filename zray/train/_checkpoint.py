"""Ray Train's Checkpoint: a directory of files, on storage every worker can read."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


class Checkpoint:
    """A directory of files a training loop saved (``Checkpoint.from_directory``)."""

    def __init__(self, path: str, filesystem=None):
        self.path = os.path.abspath(path)
        self.filesystem = filesystem

    @classmethod
    def from_directory(cls, path) -> "Checkpoint":
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise ValueError(f"Checkpoint.from_directory: {path!r} is not a directory")
        return cls(path)

    def to_directory(self, path=None) -> str:
        """Copy the checkpoint's files into ``path`` (a new temp dir by default)."""
        target = os.fspath(path) if path is not None else tempfile.mkdtemp(prefix="ckpt-")
        shutil.copytree(self.path, target, dirs_exist_ok=True)
        return target

    @contextlib.contextmanager
    def as_directory(self):
        """The checkpoint's files as a local directory (no copy: it is on storage)."""
        yield self.path

    def __repr__(self):
        return f"Checkpoint(filesystem=local, path={self.path})"

    def __eq__(self, other):
        return isinstance(other, Checkpoint) and other.path == self.path

    def __hash__(self):
        return hash(self.path)
