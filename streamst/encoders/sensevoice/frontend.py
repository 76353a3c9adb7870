"""SenseVoice's front end, as FunASR's WavFrontend computes it: Kaldi fbank → LFR → CMVN.

    audio (n_samples,) float32 in [-1, 1] at 16 kHz
      → scaled to the int16 range, 80-bin log-mel fbank, 25 ms Hamming window every 10 ms
      → low frame rate: 7 frames stacked every 6 frames (first frame repeated 3 times in front)
      → (features + shift) * scale from am.mvn
      → (n_frames, 560) float32, one row per 60 ms

Pure numpy plus kaldi-native-fbank (the fbank FunASR itself uses when torchaudio is absent).
Dither is off by default, so re-running a growing window gives the same features for the
audio it shares (FunASR's own default of 1.0 adds random noise to every run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamst.encoders.sensevoice.layout import FIX, FrontendConfig
from streamst.errors import ModelError

INT16_SCALE = float(1 << 15)  # WavFrontend's `upsacle_samples`: fbank sees int16-range samples


@dataclass(frozen=True)
class Cmvn:
    """Global CMVN from am.mvn: normalised = (features + shift) * scale."""

    shift: np.ndarray  # (feature_dim,) float32, minus the mean
    scale: np.ndarray  # (feature_dim,) float32, one over the standard deviation


def load_cmvn(path: Path) -> Cmvn:
    """Parse am.mvn (Kaldi nnet text: `<AddShift>` then `<Rescale>`, each with a bracketed vector)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"cannot read the CMVN file {path} ({e}); {FIX}") from e
    vectors: dict[str, np.ndarray] = {}
    for i, line in enumerate(lines[:-1]):
        head = line.split()
        following = lines[i + 1].split()
        if head and head[0] in ("<AddShift>", "<Rescale>") and following[:1] == ["<LearnRateCoef>"]:
            try:
                vectors[head[0]] = np.array(following[3:-1], dtype=np.float32)
            except ValueError as e:
                raise ModelError(f"{path}: the {head[0]} vector holds a value that is not a number ({e})") from e
    missing = [name for name in ("<AddShift>", "<Rescale>") if name not in vectors]
    if missing:
        raise ModelError(
            f"{path} is not a SenseVoice CMVN file: no {' or '.join(missing)} vector "
            f"(expected Kaldi nnet text with '<AddShift>' and '<Rescale>' each followed by "
            f"'<LearnRateCoef> 0 [ ... ]'); {FIX}"
        )
    shift, scale = vectors["<AddShift>"], vectors["<Rescale>"]
    if shift.shape != scale.shape or shift.size == 0:
        raise ModelError(f"{path}: <AddShift> has {shift.size} values and <Rescale> {scale.size}; they must match")
    return Cmvn(shift, scale)


class Frontend:
    """Audio → SenseVoice encoder input. Stateless after construction; safe to share across threads."""

    def __init__(self, config: FrontendConfig, cmvn: Cmvn, dither: float = 0.0) -> None:
        try:
            import kaldi_native_fbank  # noqa: F401
        except ImportError as e:
            raise ModelError("the SenseVoice front end needs kaldi-native-fbank: pip install kaldi-native-fbank") from e
        if cmvn.shift.size < config.feature_dim:
            raise ModelError(
                f"am.mvn holds {cmvn.shift.size} values per frame but the front end makes "
                f"{config.feature_dim} (n_mels {config.n_mels} x lfr_m {config.lfr_m}); "
                "the files do not belong together"
            )
        self.config = config
        self.cmvn = cmvn
        self.dither = dither

    def features(self, audio: np.ndarray) -> np.ndarray:
        """audio: (n_samples,) float32 at 16 kHz → (n_frames, feature_dim) float32; n_frames may be 0."""
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono (n_samples,), got shape {audio.shape}")
        fbank = self.fbank(audio)
        if len(fbank) == 0:
            return np.zeros((0, self.config.feature_dim), dtype=np.float32)
        stacked = apply_lfr(fbank, self.config.lfr_m, self.config.lfr_n)
        dim = stacked.shape[1]
        return ((stacked + self.cmvn.shift[:dim]) * self.cmvn.scale[:dim]).astype(np.float32)

    def fbank(self, audio: np.ndarray) -> np.ndarray:
        """(n_samples,) → (n_fbank_frames, n_mels) log-mel energies, Kaldi-compatible."""
        import kaldi_native_fbank as knf

        c = self.config
        if len(audio) < c.frame_length_ms * c.sample_rate_hz / 1000:
            return np.zeros((0, c.n_mels), dtype=np.float32)  # shorter than one analysis window
        opts = knf.FbankOptions()
        opts.frame_opts.samp_freq = float(c.sample_rate_hz)
        opts.frame_opts.frame_length_ms = float(c.frame_length_ms)
        opts.frame_opts.frame_shift_ms = float(c.frame_shift_ms)
        opts.frame_opts.dither = float(self.dither)
        opts.frame_opts.snip_edges = True
        opts.frame_opts.window_type = c.window
        opts.mel_opts.num_bins = c.n_mels
        opts.energy_floor = 0.0
        computer = knf.OnlineFbank(opts)
        computer.accept_waveform(float(c.sample_rate_hz), audio.astype(np.float32) * INT16_SCALE)
        computer.input_finished()
        n_frames = computer.num_frames_ready
        if n_frames == 0:
            return np.zeros((0, c.n_mels), dtype=np.float32)
        return np.stack([np.asarray(computer.get_frame(i), dtype=np.float32) for i in range(n_frames)])


def apply_lfr(frames: np.ndarray, lfr_m: int, lfr_n: int) -> np.ndarray:
    """Low frame rate, as FunASR's `apply_lfr`: (n_frames, dim) → (ceil(n_frames / lfr_n), lfr_m * dim).

    Output row i stacks input rows i*lfr_n … i*lfr_n + lfr_m - 1 after the first frame is repeated
    (lfr_m - 1) // 2 times in front; rows past the end repeat the last frame."""
    n_frames, dim = frames.shape
    n_out = -(-n_frames // lfr_n)
    padded = np.concatenate([np.repeat(frames[:1], (lfr_m - 1) // 2, axis=0), frames])
    n_needed = (n_out - 1) * lfr_n + lfr_m
    if len(padded) < n_needed:
        padded = np.concatenate([padded, np.repeat(padded[-1:], n_needed - len(padded), axis=0)])
    starts = np.arange(n_out) * lfr_n
    rows = starts[:, None] + np.arange(lfr_m)[None, :]
    return padded[rows].reshape(n_out, lfr_m * dim)
