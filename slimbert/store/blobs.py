"""Small named records (job records, markers, pointers) kept by key: in a local directory or in a bucket.

The interface is what both an object store and a directory can promise: whole objects replaced
atomically, an exclusive create, and a listing with modification times. Keys use "/" as separator
and never start with "." (a dot names the temporary files of a local write).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import NamedTuple, Protocol

from slimbert.records import SHARED_FILE_MODE


class Blob(NamedTuple):
    key: str
    modified: float  # seconds since the epoch: S3 gives whole seconds, a local file nanoseconds
    etag: str  # changes whenever the object is rewritten


class Blobs(Protocol):
    """Whole-object storage by key."""

    def put(self, key: str, data: bytes, *, exclusive: bool = False) -> bool:
        """Store ``data`` under ``key`` (readers see the old or the new object, never a mix); with
        ``exclusive``, only if nothing is stored there yet. True when written."""
        ...

    def get(self, key: str) -> bytes | None:
        """The object, or None when there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[Blob]:
        """Every object whose key starts with ``prefix``, at any depth."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; nothing happens when it is not there."""
        ...


class LocalBlobs:
    """Blobs as files below ``root``: written to a temporary file, fsynced, then renamed over."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not key or key.startswith(("/", ".")) or ".." in key.split("/"):
            raise ValueError(f"invalid key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes, *, exclusive: bool = False) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            # mkstemp makes 0600: a worker of another service (or uid) sharing the volume must read and write it.
            os.fchmod(fd, SHARED_FILE_MODE)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if exclusive:
                try:
                    os.link(tmp, path)  # fails when the key exists, unlike rename: the first writer wins
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, path)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[Blob]:
        out = []
        for dirpath, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:  # replaced or deleted while we walked
                    continue
                out.append(Blob(key, st.st_mtime_ns / 1e9, f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"))
        return out

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()
