"""Is a model in the cache and intact? `model_path` answers cheaply, `verify` thoroughly."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from streamst.errors import ModelError, ModelNotPulledError, OptionsError
from streamst.registry import store
from streamst.registry.catalog import get_manifest
from streamst.registry.manifest import Manifest, ModelFile, source_files
from streamst.registry.store import FileCheck, Stamp, StampEntry

log = logging.getLogger("streamst.registry")

PullState = Literal["pulled", "not pulled", "incomplete", "changed"]


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of hashing every file of one model."""

    name: str
    directory: Path
    source: str | None  # label of the source whose file set was checked; None when none is present
    files: tuple[FileCheck, ...]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    @property
    def problems(self) -> tuple[FileCheck, ...]:
        return tuple(f for f in self.files if not f.ok)


def expected_files(manifest: Manifest, directory: Path, stamp: Stamp) -> tuple[str | None, tuple[ModelFile, ...]]:
    """The file set the directory should hold: the stamped source's, else the first source's
    whose files are all present, else the manifest's top-level files."""
    by_label = {source.label: source for source in manifest.sources}
    if stamp.source in by_label:
        return stamp.source, source_files(by_label[stamp.source])
    for source in manifest.sources:
        files = source_files(source)
        if all((directory / f.path).is_file() for f in files):
            return source.label, files
    return None, manifest.files


def verify(name: str | Manifest) -> VerifyResult:
    """Hash every file of a model against its manifest and refresh the stamp."""
    manifest = get_manifest(name)
    directory = store.model_dir(manifest.name)
    stamp = store.read_stamp(directory)
    label, files = expected_files(manifest, directory, stamp)
    results = [store.check_file(directory, f, stamp, rehash=True) for f in files]
    if directory.is_dir():
        _save_entries(directory, label, {check.path: entry for check, entry in results}, replace=True)
    return VerifyResult(manifest.name, directory, label, tuple(check for check, _ in results))


def model_path(name: str | Manifest) -> Path:
    """The directory of a pulled, intact model, for loading.

    Costs a few stat calls when nothing changed since the last pull or verify; a file
    whose size, mtime or inode moved is hashed again.
    """
    manifest = get_manifest(name)
    directory = store.model_dir(manifest.name)
    stamp = store.read_stamp(directory)
    label, files = expected_files(manifest, directory, stamp)
    results = [store.check_file(directory, f, stamp, rehash=False) for f in files]
    _raise_for_problems(manifest.name, [check for check, _ in results])
    fresh = {check.path: entry for check, entry in results if stamp.files.get(check.path) != entry}
    if fresh or stamp.source != label:
        _save_entries(directory, label, fresh, replace=False)
    return directory


def model_file(name: str | Manifest, path_in_model: str) -> Path:
    """The path of one file of a pulled, intact model."""
    manifest = get_manifest(name)
    directory = model_path(manifest)
    stamp = store.read_stamp(directory)
    _, files = expected_files(manifest, directory, stamp)
    wanted = str(PurePosixPath(path_in_model))
    if wanted not in {f.path for f in files}:
        raise OptionsError(
            f"model '{manifest.name}' has no file {path_in_model!r}; its files: {', '.join(f.path for f in files)}"
        )
    return directory / wanted


def pull_state(name: str | Manifest) -> PullState:
    """Whether a model is in the cache, judged from stat calls and the stamp only."""
    manifest = get_manifest(name)
    directory = store.model_dir(manifest.name)
    if not directory.is_dir():
        return "not pulled"
    stamp = store.read_stamp(directory)
    _, files = expected_files(manifest, directory, stamp)
    states = [store.stat_state(directory, f, stamp) for f in files]
    if all(s == "missing" for s in states):
        return "not pulled"
    if "missing" in states:
        return "incomplete"
    return "changed" if "changed" in states else "pulled"


def _raise_for_problems(name: str, checks: list[FileCheck]) -> None:
    missing = [c.path for c in checks if c.state == "missing"]
    if missing and len(missing) == len(checks):
        raise ModelNotPulledError(f"model '{name}' is not pulled yet; run: streamst models pull {name}")
    if missing:
        raise ModelNotPulledError(
            f"model '{name}' is incomplete ({', '.join(missing)} missing); run: streamst models pull {name}"
        )
    corrupt = [c for c in checks if c.state == "corrupt"]
    if corrupt:
        raise ModelError(
            f"model '{name}' has a corrupt file: {corrupt[0].describe()}; "
            f"run: streamst models pull {name} (it repairs the file)"
        )


def _save_entries(directory: Path, label: str | None, entries: dict[str, StampEntry | None], *, replace: bool) -> None:
    """Merge entries into the stamp (None drops one); skipped while a pull holds the lock."""
    try:
        with store.locked(directory, wait=False) as acquired:
            if not acquired:
                log.debug("%s is being pulled; not refreshing its stamp", directory)
                return
            current = store.read_stamp(directory)
            merged = {} if replace else dict(current.files)
            merged.update(entries)
            kept = {path: entry for path, entry in merged.items() if entry is not None}
            store.write_stamp(directory, Stamp(source=label, files=kept))
    except (OSError, ModelError) as e:
        log.debug("cannot refresh the stamp in %s: %s", directory, e)
