"""The model cache on disk: `$STREAMST_HOME/models/<name>/<file>`, stamps, hashing, checks.

A stamp (`.stamp.json` in the model directory) records, per verified file, its size,
mtime_ns, inode and sha256, and the source whose file set the directory holds. A file whose
stat still matches its stamp entry is taken as verified without reading it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from streamst.errors import ModelError, SourceUnavailableError
from streamst.registry.manifest import ModelFile

log = logging.getLogger("streamst.registry")

HOME_ENV = "STREAMST_HOME"
DEFAULT_HOME = Path("~/.cache/streamst")
STAMP_NAME = ".stamp.json"
LOCK_NAME = ".lock"
PARTIAL_SUFFIX = ".partial"
CHUNK_BYTES = 1 << 20

FileState = Literal["ok", "missing", "corrupt"]


def home() -> Path:
    """The streamst cache root: $STREAMST_HOME, or ~/.cache/streamst."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()


def model_dir(name: str) -> Path:
    return home() / "models" / name


@dataclass(frozen=True)
class StampEntry:
    size: int
    mtime_ns: int
    inode: int
    sha256: str

    def matches(self, st: os.stat_result) -> bool:
        return (self.size, self.mtime_ns, self.inode) == (st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class Stamp:
    source: str | None = None  # label of the source whose file set the directory holds
    files: dict[str, StampEntry] = field(default_factory=dict)


@dataclass(frozen=True)
class FileCheck:
    """The state of one model file against what a manifest expects."""

    path: str  # path inside the model directory
    state: FileState
    expected_size: int | None
    actual_size: int | None  # None when missing
    expected_sha256: str | None  # None when the manifest does not pin it
    actual_sha256: str | None  # None when missing or not read

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def describe(self) -> str:
        if self.state == "missing":
            return f"{self.path}: missing"
        if self.state == "ok":
            return f"{self.path}: ok" + ("" if self.expected_sha256 else " (not pinned: presence checked only)")
        if self.expected_size is not None and self.actual_size != self.expected_size:
            return f"{self.path}: corrupt (size {self.actual_size} bytes, expected {self.expected_size})"
        return f"{self.path}: corrupt (sha256 {self.actual_sha256}, expected {self.expected_sha256})"


def read_stamp(directory: Path) -> Stamp:
    try:
        data = json.loads((directory / STAMP_NAME).read_text(encoding="utf-8"))
        files = {path: StampEntry(**entry) for path, entry in data.get("files", {}).items()}
        return Stamp(source=data.get("source"), files=files)
    except FileNotFoundError:
        return Stamp()
    except (OSError, ValueError, TypeError) as e:
        log.warning("ignoring unreadable stamp in %s (%s); files will be re-hashed", directory, e)
        return Stamp()


def write_stamp(directory: Path, stamp: Stamp) -> None:
    data = {"source": stamp.source, "files": {p: vars(e) for p, e in sorted(stamp.files.items())}}
    tmp = directory / (STAMP_NAME + PARTIAL_SUFFIX)
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, directory / STAMP_NAME)


def stamp_entry(path: Path, sha256: str) -> StampEntry:
    st = path.stat()
    return StampEntry(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, sha256=sha256)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(
    directory: Path, expected: ModelFile, stamp: Stamp, *, rehash: bool
) -> tuple[FileCheck, StampEntry | None]:
    """Check one file; hashes it only when `rehash` or its stamp entry is stale.

    Returns the check and the stamp entry to keep for it (None when it is not ok).
    """
    target = directory / expected.path
    try:
        st = target.stat()
    except FileNotFoundError:
        return FileCheck(expected.path, "missing", expected.size, None, expected.sha256, None), None
    if expected.size is not None and st.st_size != expected.size:
        return FileCheck(expected.path, "corrupt", expected.size, st.st_size, expected.sha256, None), None
    entry = stamp.files.get(expected.path)
    if rehash or entry is None or not entry.matches(st):
        log.debug("hashing %s", target)
        entry = stamp_entry(target, sha256_of(target))
    if expected.sha256 is not None and entry.sha256 != expected.sha256:
        return FileCheck(expected.path, "corrupt", expected.size, st.st_size, expected.sha256, entry.sha256), None
    return FileCheck(expected.path, "ok", expected.size, st.st_size, expected.sha256, entry.sha256), entry


def stat_state(directory: Path, expected: ModelFile, stamp: Stamp) -> Literal["ok", "missing", "changed"]:
    """A check that never reads file contents: for listings."""
    try:
        st = (directory / expected.path).stat()
    except FileNotFoundError:
        return "missing"
    entry = stamp.files.get(expected.path)
    if expected.size is not None and st.st_size != expected.size:
        return "changed"
    if entry is None or not entry.matches(st) or (expected.sha256 and entry.sha256 != expected.sha256):
        return "changed"
    return "ok"


@dataclass(frozen=True)
class Payload:
    """The bytes of one file as a source delivers them, consumed once."""

    file: ModelFile  # where the bytes go and what they must hash to
    n_bytes: int | None  # for the progress bar; None when unknown
    chunks: Iterable[bytes]


def install(directory: Path, payload: Payload, *, label: str, progress: bool) -> StampEntry:
    """Write a payload to `<file>.partial`, check size and sha256, then move it into place.

    The final name only ever holds a checked file. A mismatch removes the partial file
    and raises SourceUnavailableError, so the caller can try the next source.
    """
    expected = payload.file
    target = directory / expected.path
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    n_written = 0
    try:
        with partial.open("wb") as out, _bar(payload.n_bytes, label, progress) as bar:
            for chunk in payload.chunks:
                out.write(chunk)
                digest.update(chunk)
                n_written += len(chunk)
                bar.update(len(chunk))
        _check_assembled(expected, n_written, digest.hexdigest(), label)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return stamp_entry(target, digest.hexdigest())


def _check_assembled(expected: ModelFile, n_bytes: int, sha256: str, label: str) -> None:
    if expected.size is not None and n_bytes != expected.size:
        raise SourceUnavailableError(f"{label}: got {n_bytes} bytes, the manifest expects {expected.size}")
    if expected.sha256 is not None and sha256 != expected.sha256:
        raise SourceUnavailableError(f"{label}: got sha256 {sha256}, the manifest expects {expected.sha256}")


def _bar(total: int | None, label: str, progress: bool) -> tqdm:
    return tqdm(
        total=total,
        desc=label,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=not progress,
        leave=False,
    )


def remove_stray(directory: Path, keep: Iterable[str], candidates: Iterable[str]) -> None:
    """Remove files another source left that the current file set does not include."""
    keep_set = set(keep)
    for path in candidates:
        if path not in keep_set:
            with contextlib.suppress(FileNotFoundError):
                (directory / path).unlink()
                log.info("removed %s (not part of the pulled file set)", directory / path)


@contextlib.contextmanager
def locked(directory: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive lock on a model directory; yields False when `wait` is off and it is busy.

    POSIX only; elsewhere it yields True without locking.
    """
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield True
        return
    with (directory / LOCK_NAME).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        except OSError as e:
            raise ModelError(f"cannot lock {directory}: {e}; check that the cache is writable") from e
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
