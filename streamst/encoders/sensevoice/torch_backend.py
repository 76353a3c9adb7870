"""SenseVoiceSmall through FunASR's own model class on PyTorch (CPU, or CUDA when present).

The model is FunASR's `SenseVoiceSmall` built from config.yaml and loaded from model.pt; a
forward pass runs the same steps as its `inference`: query embeddings for language, event,
emotion and text normalisation in front of the features, the encoder, the CTC log-softmax.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from streamst.encoders.sensevoice.layout import FIX, SenseVoiceConfig, SenseVoiceFiles
from streamst.encoders.sensevoice.tokens import (
    EVENT_EMOTION_QUERY_IDS,
    LANGUAGE_QUERY_IDS,
    N_QUERY_EMBEDDINGS,
    N_QUERY_FRAMES,
    TEXTNORM_QUERY_IDS,
)
from streamst.errors import ModelError

log = logging.getLogger("streamst.encoders.sensevoice")

INSTALL = "pip install 'streamst[torch]' (torch==2.13.0 first, then funasr)"
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")  # wrappers FunASR unwraps too
MAX_KEYS_SHOWN = 5


def import_funasr_model() -> type:
    """FunASR's SenseVoiceSmall class; ModelError with the install command when it is missing."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise ModelError(f"the SenseVoice torch backend needs PyTorch: {INSTALL}") from e
    try:
        from funasr.models.sense_voice.model import SenseVoiceSmall
    except ImportError as e:
        raise ModelError(f"the SenseVoice torch backend needs FunASR ({e}): {INSTALL}") from e
    return SenseVoiceSmall


def build_model(config: SenseVoiceConfig, vocab_size: int) -> Any:
    """An untrained FunASR SenseVoiceSmall with the architecture config.yaml describes."""
    model_class = import_funasr_model()
    ctc_conf = config.raw.get("ctc_conf") or {}
    model = model_class(
        **{k: v for k, v in config.model_conf.items() if k not in ("vocab_size", "input_size")},
        encoder=config.raw["encoder"],
        encoder_conf=dict(config.encoder_conf),
        ctc_conf=dict(ctc_conf),
        input_size=config.frontend.feature_dim,
        vocab_size=vocab_size,
    )
    _check_query_ids(model)
    return model


def load_model(files: SenseVoiceFiles, config: SenseVoiceConfig, vocab_size: int, device: str = "cpu") -> Any:
    """FunASR SenseVoiceSmall with the weights of model.pt, in eval mode on `device`."""
    import torch

    if not files.has_checkpoint:
        raise ModelError(f"SenseVoice directory {files.directory} has no {files.checkpoint.name} (the weights); {FIX}")
    model = build_model(config, vocab_size)
    try:
        checkpoint = torch.load(files.checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"{files.checkpoint} is not a readable PyTorch state dict ({e}); {FIX}") from e
    load_state(model, checkpoint, str(files.checkpoint))
    return model.to(device).eval()


def load_state(model: Any, checkpoint: Any, origin: str) -> None:
    """Copy a checkpoint's tensors into `model`; every parameter must be there with its shape."""
    state = checkpoint
    for key in CHECKPOINT_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelError(f"{origin} holds a {type(state).__name__}, not a state dict of tensors; {FIX}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or wrong:
        raise ModelError(
            f"{origin} does not match config.yaml: "
            + (f"{len(missing)} missing tensors ({', '.join(missing[:MAX_KEYS_SHOWN])}) " if missing else "")
            + (f"{len(wrong)} tensors of another shape ({'; '.join(wrong[:MAX_KEYS_SHOWN])})" if wrong else "")
            + f"; the checkpoint, config.yaml and BPE model must come from the same release ({FIX})"
        )
    extra = [k for k in state if k not in expected]
    if extra:
        log.warning(
            "%s: ignoring %d tensors the model does not use (%s)", origin, len(extra), ", ".join(extra[:MAX_KEYS_SHOWN])
        )
    model.load_state_dict({k: state[k] for k in expected}, strict=True)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' was asked for but PyTorch sees no CUDA GPU; use device 'cpu' or 'auto'")
    return device


class TorchRunner:
    """features → CTC log-probabilities with FunASR's SenseVoiceSmall. Thread-safe (serialised)."""

    name = "torch"

    def __init__(self, model: Any, device: str) -> None:
        self.model = model
        self.device = device
        self.vocab_size = int(model.vocab_size)
        self._lock = threading.Lock()

    def log_probs(self, features: np.ndarray, language_id: int, textnorm_id: int) -> np.ndarray:
        """features: (n_frames, feature_dim) → (N_QUERY_FRAMES + n_frames, vocab_size) float32."""
        import torch

        with self._lock, torch.inference_mode():
            m = self.model
            speech = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))[None].to(self.device)
            queries = torch.tensor([[language_id, *EVENT_EMOTION_QUERY_IDS, textnorm_id]], device=self.device)
            x = torch.cat([m.embed(queries), speech], dim=1)
            lengths = torch.tensor([x.shape[1]], dtype=torch.int32, device=self.device)
            encoder_out, _ = m.encoder(x, lengths)
            if isinstance(encoder_out, tuple):
                encoder_out = encoder_out[0]
            out = m.ctc.log_softmax(encoder_out)[0].float().cpu().numpy()
        if out.shape[0] != N_QUERY_FRAMES + len(features):
            raise ModelError(
                f"the SenseVoice encoder returned {out.shape[0]} frames for {len(features)} + {N_QUERY_FRAMES}"
            )
        return out


def _check_query_ids(model: Any) -> None:
    """The query ids streamst uses must be the ones this FunASR version trained with."""
    if (
        dict(model.lid_dict) != LANGUAGE_QUERY_IDS
        or dict(model.textnorm_dict) != TEXTNORM_QUERY_IDS
        or model.embed.num_embeddings != N_QUERY_EMBEDDINGS
    ):
        raise ModelError(
            "this FunASR version numbers the SenseVoice language/text-norm queries differently "
            f"({dict(model.lid_dict)}, {dict(model.textnorm_dict)}); install a FunASR release with "
            f"lid_dict {LANGUAGE_QUERY_IDS}"
        )
