"""Which models exist: the manifests shipped in `streamst.models`, plus any named by
$STREAMST_MANIFESTS (directories or files, separated by os.pathsep)."""

from __future__ import annotations

import functools
import importlib.resources
import os
from collections.abc import Iterable
from pathlib import Path

from streamst.errors import OptionsError
from streamst.registry.manifest import Catalog, Manifest, load_catalog

MANIFESTS_ENV = "STREAMST_MANIFESTS"
ALL_GROUP = "all"


def builtin_manifest_dir() -> Path:
    return Path(str(importlib.resources.files("streamst.models")))


def catalog() -> Catalog:
    """The current catalog; re-read only when $STREAMST_MANIFESTS changes."""
    return _catalog(os.environ.get(MANIFESTS_ENV, ""))


@functools.lru_cache(maxsize=8)
def _catalog(extra: str) -> Catalog:
    locations = [builtin_manifest_dir()]
    locations += [Path(p).expanduser() for p in extra.split(os.pathsep) if p]
    return load_catalog(locations)


def list_models() -> list[Manifest]:
    """Every known model, sorted by name."""
    manifests = catalog().manifests
    return [manifests[name] for name in sorted(manifests)]


def get_manifest(name: str | Manifest) -> Manifest:
    """The manifest of a model; a Manifest passes through unchanged."""
    if isinstance(name, Manifest):
        return name
    manifests = catalog().manifests
    if name not in manifests:
        raise OptionsError(f"unknown model {name!r}; available models: {', '.join(sorted(manifests))}")
    return manifests[name]


def resolve_names(names: Iterable[str]) -> list[str]:
    """Expand group names ("default", "all") into model names, keeping order, without repeats."""
    current = catalog()
    resolved: list[str] = []
    for name in names:
        if name == ALL_GROUP:
            members: Iterable[str] = sorted(current.manifests)
        elif name in current.groups:
            members = current.groups[name]
        elif name in current.manifests:
            members = [name]
        else:
            valid = sorted(current.manifests) + sorted(current.groups) + [ALL_GROUP]
            raise OptionsError(f"unknown model or group {name!r}; valid names: {', '.join(valid)}")
        resolved.extend(m for m in members if m not in resolved)
    return resolved
