"""The official SenseVoiceSmall directory (`iic/SenseVoiceSmall`): which files, and what config.yaml says.

    model.pt                               PyTorch state dict of the FunASR `SenseVoiceSmall` class
    config.yaml                            model, encoder_conf, frontend_conf, tokenizer
    am.mvn                                 CMVN statistics (Kaldi nnet text: <AddShift>, <Rescale>)
    chn_jpn_yue_eng_ko_spectok.bpe.model   SentencePiece BPE with the <|tag|> tokens
    model.onnx / model_quant.onnx          optional: the encoder + CTC head exported for onnxruntime

Everything here is plain Python; nothing loads a model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamst.errors import ModelError

CHECKPOINT_NAME = "model.pt"
CONFIG_NAME = "config.yaml"
CMVN_NAME = "am.mvn"
BPE_NAME = "chn_jpn_yue_eng_ko_spectok.bpe.model"
CONFIGURATION_NAME = "configuration.json"  # ModelScope's pointer file; optional
ONNX_NAME = "model.onnx"
ONNX_QUANT_NAME = "model_quant.onnx"

MODEL_CLASS = "SenseVoiceSmall"
ENCODER_CLASS = "SenseVoiceEncoderSmall"
FRONTEND_CLASS = "WavFrontend"
FIX = "pull it again with: streamst models pull sensevoice-small"


@dataclass(frozen=True)
class FrontendConfig:
    """`frontend_conf` of config.yaml (FunASR's WavFrontend); defaults are WavFrontend's."""

    sample_rate_hz: int = 16_000
    window: str = "hamming"
    n_mels: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    lfr_m: int = 7  # low frame rate: stack this many fbank frames ...
    lfr_n: int = 6  # ... every this many frames

    @property
    def feature_dim(self) -> int:
        return self.n_mels * self.lfr_m

    @property
    def output_frame_ms(self) -> float:
        """Audio per encoder output frame (60 ms for SenseVoiceSmall)."""
        return self.frame_shift_ms * self.lfr_n


@dataclass(frozen=True)
class SenseVoiceConfig:
    """What config.yaml says about the model; `raw` keeps the whole file."""

    encoder_conf: Mapping[str, Any]
    model_conf: Mapping[str, Any]
    frontend: FrontendConfig
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class SenseVoiceFiles:
    """The files of one SenseVoice directory; `checkpoint` and the ONNX files may be absent."""

    directory: Path
    config: Path
    cmvn: Path
    bpe: Path
    checkpoint: Path

    def onnx(self, name: str = ONNX_NAME) -> Path:
        return self.directory / name

    @property
    def has_checkpoint(self) -> bool:
        return self.checkpoint.is_file()


def find_files(model_dir: Path | str) -> SenseVoiceFiles:
    """The files of a SenseVoice directory; raises ModelError naming the first missing one."""
    directory = Path(model_dir)
    if not directory.is_dir():
        raise ModelError(f"SenseVoice model directory {directory} does not exist; {FIX}")
    names = _file_names(directory)
    files = SenseVoiceFiles(
        directory=directory,
        config=directory / CONFIG_NAME,
        cmvn=directory / names.get("cmvn_file", CMVN_NAME),
        bpe=directory / names.get("bpemodel", BPE_NAME),
        checkpoint=directory / names.get("init_param", CHECKPOINT_NAME),
    )
    expected = {
        files.config: "the model configuration (YAML with encoder_conf and frontend_conf)",
        files.cmvn: "the CMVN statistics (Kaldi nnet text with <AddShift> and <Rescale>)",
        files.bpe: "the SentencePiece BPE model with the <|tag|> tokens",
    }
    for path, what in expected.items():
        if not path.is_file():
            raise ModelError(f"SenseVoice directory {directory} has no {path.name} ({what}); {FIX}")
    return files


def read_config(path: Path) -> SenseVoiceConfig:
    """Parse and check config.yaml; raises ModelError naming the bad key."""
    try:
        import yaml
    except ImportError as e:
        raise ModelError("reading a SenseVoice config.yaml needs PyYAML: pip install pyyaml") from e
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ModelError(f"{path} is not a readable YAML file ({e}); {FIX}") from e
    if not isinstance(raw, dict):
        raise ModelError(f"{path} must be a YAML mapping with model, encoder_conf and frontend_conf; {FIX}")
    _expect(raw, "model", MODEL_CLASS, path)
    _expect(raw, "encoder", ENCODER_CLASS, path)
    if raw.get("frontend", FRONTEND_CLASS) != FRONTEND_CLASS:
        raise ModelError(f"{path}: frontend is {raw.get('frontend')!r}, expected {FRONTEND_CLASS!r}")
    encoder_conf = _mapping(raw, "encoder_conf", path)
    for key in ("output_size", "attention_heads", "linear_units", "num_blocks"):
        if not isinstance(encoder_conf.get(key), int) or encoder_conf[key] < 1:
            raise ModelError(f"{path}: encoder_conf.{key} must be a positive integer, got {encoder_conf.get(key)!r}")
    model_conf = raw.get("model_conf") or {}
    if not isinstance(model_conf, dict):
        raise ModelError(f"{path}: model_conf must be a mapping, got {type(model_conf).__name__}")
    return SenseVoiceConfig(
        encoder_conf=encoder_conf,
        model_conf=model_conf,
        frontend=_frontend_config(_mapping(raw, "frontend_conf", path), path),
        raw=raw,
    )


def _frontend_config(conf: Mapping[str, Any], path: Path) -> FrontendConfig:
    defaults = FrontendConfig()
    try:
        frontend = FrontendConfig(
            sample_rate_hz=int(conf.get("fs", defaults.sample_rate_hz)),
            window=str(conf.get("window", defaults.window)),
            n_mels=int(conf.get("n_mels", defaults.n_mels)),
            frame_length_ms=float(conf.get("frame_length", defaults.frame_length_ms)),
            frame_shift_ms=float(conf.get("frame_shift", defaults.frame_shift_ms)),
            lfr_m=int(conf.get("lfr_m", defaults.lfr_m)),
            lfr_n=int(conf.get("lfr_n", defaults.lfr_n)),
        )
    except (TypeError, ValueError) as e:
        raise ModelError(f"{path}: frontend_conf holds a value that is not a number ({e})") from e
    if frontend.sample_rate_hz != 16_000:
        raise ModelError(f"{path}: frontend_conf.fs is {frontend.sample_rate_hz}; streamst feeds 16000 Hz audio")
    if min(frontend.n_mels, frontend.lfr_m, frontend.lfr_n) < 1:
        raise ModelError(f"{path}: frontend_conf n_mels, lfr_m and lfr_n must be positive")
    return frontend


def _file_names(directory: Path) -> dict[str, str]:
    """Local file names from configuration.json's `file_path_metas`, when it names them."""
    pointer = directory / CONFIGURATION_NAME
    if not pointer.is_file():
        return {}
    try:
        metas = json.loads(pointer.read_text(encoding="utf-8")).get("file_path_metas", {})
    except (OSError, ValueError, AttributeError):
        return {}
    names: dict[str, str] = {}
    for section in (metas, metas.get("tokenizer_conf", {}), metas.get("frontend_conf", {})):
        if isinstance(section, dict):
            names.update({k: v for k, v in section.items() if isinstance(v, str) and "/" not in v})
    return names


def _expect(raw: Mapping[str, Any], key: str, value: str, path: Path) -> None:
    if raw.get(key) != value:
        raise ModelError(f"{path}: {key} is {raw.get(key)!r}, expected {value!r}; this is not a SenseVoiceSmall config")


def _mapping(raw: Mapping[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise ModelError(f"{path}: {key} must be a mapping, got {value!r}")
    return value
