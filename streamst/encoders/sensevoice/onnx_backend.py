"""SenseVoiceSmall's encoder + CTC head as ONNX, on onnxruntime (no PyTorch).

Reads the format FunASR's export writes (and `iic/SenseVoiceSmall-onnx` ships):

    inputs   speech (batch, n_frames, 560) float32, speech_lengths (batch,),
             language (batch,), textnorm (batch,)       — integer ids of the query embeddings
    outputs  ctc_logits (batch, 4 + n_frames, vocab_size), encoder_out_lens (batch,)

`CUDAExecutionProvider` is used when onnxruntime-gpu provides it and the device allows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from streamst.encoders.sensevoice.tokens import N_QUERY_FRAMES
from streamst.errors import ModelError

log = logging.getLogger("streamst.encoders.sensevoice")

INPUT_NAMES = ("speech", "speech_lengths", "language", "textnorm")
OUTPUT_NAMES = ("ctc_logits", "encoder_out_lens")
ONNX_DTYPES = {"tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(float)": np.float32}
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
EXPORT_HINT = "export it with: python -m streamst.encoders.sensevoice.export"


def providers_for(device: str) -> list[str]:
    """onnxruntime providers for "cpu", "cuda" or "auto" (CUDA when onnxruntime-gpu offers it)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU_PROVIDER]
    if CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, CPU_PROVIDER]
    if device == "cuda":
        raise ModelError(
            f"device 'cuda' was asked for but onnxruntime offers only {available}; "
            "install onnxruntime-gpu (in place of onnxruntime) or use device 'cpu'"
        )
    return [CPU_PROVIDER]


class OnnxRunner:
    """features → CTC log-probabilities with onnxruntime. Thread-safe (sessions are)."""

    name = "onnx"

    def __init__(self, path: Path, device: str = "auto", n_threads: int = 2) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ModelError("the SenseVoice ONNX backend needs onnxruntime: pip install onnxruntime") from e
        if not path.is_file():
            raise ModelError(f"no ONNX model at {path}; {EXPORT_HINT}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = n_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads yield the CPU
        providers = providers_for(device)
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:
            raise ModelError(f"cannot load the SenseVoice ONNX model {path} ({e}); {EXPORT_HINT}") from e
        self.path = path
        self.providers = tuple(self._session.get_providers())
        self._input_dtypes = self._check_signature(path)
        self.vocab_size = self._vocab_size()
        log.info("SenseVoice ONNX model %s on %s", path.name, ", ".join(self.providers))

    def log_probs(self, features: np.ndarray, language_id: int, textnorm_id: int) -> np.ndarray:
        """features: (n_frames, feature_dim) → (N_QUERY_FRAMES + n_frames, vocab_size) float32."""
        dtypes = self._input_dtypes
        feeds = {
            "speech": np.ascontiguousarray(features[None], dtype=np.float32),
            "speech_lengths": np.array([len(features)], dtype=dtypes["speech_lengths"]),
            "language": np.array([language_id], dtype=dtypes["language"]),
            "textnorm": np.array([textnorm_id], dtype=dtypes["textnorm"]),
        }
        logits, lengths = self._session.run(list(OUTPUT_NAMES), feeds)
        n_frames = int(lengths[0])
        if n_frames != N_QUERY_FRAMES + len(features):
            raise ModelError(f"{self.path.name} returned {n_frames} frames for {len(features)} + {N_QUERY_FRAMES}")
        return log_softmax(logits[0, :n_frames].astype(np.float32))

    def _check_signature(self, path: Path) -> dict[str, type]:
        inputs = {i.name: i.type for i in self._session.get_inputs()}
        outputs = [o.name for o in self._session.get_outputs()]
        if set(inputs) != set(INPUT_NAMES) or not set(OUTPUT_NAMES) <= set(outputs):
            raise ModelError(
                f"{path} is not a SenseVoice encoder export: inputs {sorted(inputs)}, outputs {outputs}; "
                f"expected inputs {list(INPUT_NAMES)} and outputs {list(OUTPUT_NAMES)} ({EXPORT_HINT})"
            )
        return {name: ONNX_DTYPES.get(kind, np.int32) for name, kind in inputs.items()}

    def _vocab_size(self) -> int | None:
        shape = next(o.shape for o in self._session.get_outputs() if o.name == "ctc_logits")
        return shape[-1] if isinstance(shape[-1], int) else None


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Along the last axis, in float32."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
