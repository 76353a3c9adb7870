"""SenseVoice backend on a tiny, randomly initialised SenseVoiceSmall built from the official
configuration (small dimensions) and saved in the official layout: loading through the registry,
torch ↔ ONNX agreement, timestamps, tags, and clear errors for broken directories.

Random weights give random text, so these tests assert structure, not content."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the SenseVoice tests need the torch extra: pip install 'streamst[torch]'")
pytest.importorskip("funasr", reason="the SenseVoice tests need FunASR: pip install 'streamst[torch]'")
pytest.importorskip("kaldi_native_fbank", reason="the SenseVoice front end needs kaldi-native-fbank")
spm = pytest.importorskip("sentencepiece", reason="SenseVoice decoding needs sentencepiece")
pytest.importorskip("onnx", reason="the ONNX export needs onnx")

from streamst import registry  # noqa: E402
from streamst.encoders.sensevoice import SenseVoiceOptions, load_sensevoice  # noqa: E402
from streamst.encoders.sensevoice.ctc import decode  # noqa: E402
from streamst.encoders.sensevoice.export import export_onnx  # noqa: E402
from streamst.encoders.sensevoice.frontend import load_cmvn  # noqa: E402
from streamst.encoders.sensevoice.layout import (  # noqa: E402
    BPE_NAME,
    CHECKPOINT_NAME,
    CMVN_NAME,
    CONFIG_NAME,
    CONFIGURATION_NAME,
    ONNX_NAME,
    ONNX_QUANT_NAME,
    read_config,
)
from streamst.encoders.sensevoice.tokens import N_QUERY_FRAMES, Vocabulary  # noqa: E402
from streamst.errors import ModelError, OptionsError  # noqa: E402
from streamst.types import SAMPLE_RATE_HZ  # noqa: E402

MODEL_NAME = "sensevoice-small"
# torch and onnxruntime (fp32) must give the same CTC log-probabilities to within this.
LOGPROB_ATOL = 1e-4
# int8 weights move log-probabilities more; the greedy symbol must still agree on most frames.
INT8_MIN_ARGMAX_AGREEMENT = 0.9

TAGS = (
    "<|zh|>", "<|en|>", "<|yue|>", "<|ja|>", "<|ko|>", "<|nospeech|>",
    "<|HAPPY|>", "<|SAD|>", "<|ANGRY|>", "<|NEUTRAL|>", "<|EMO_UNKNOWN|>",
    "<|Speech|>", "<|BGM|>", "<|Laughter|>", "<|withitn|>", "<|woitn|>",
)  # fmt: skip
CORPUS = (
    "Hello world, how are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "区块链是今年最热门的话题。",
    "今日はいい天気ですね。",
    "We translate speech while people are still talking!",
)
# The official iic/SenseVoiceSmall config.yaml (its inference part) with small encoder dimensions.
TINY_CONFIG = """\
encoder: SenseVoiceEncoderSmall
encoder_conf:
    output_size: 32
    attention_heads: 2
    linear_units: 64
    num_blocks: 2
    tp_blocks: 1
    dropout_rate: 0.1
    positional_dropout_rate: 0.1
    attention_dropout_rate: 0.1
    input_layer: pe
    pos_enc_class: SinusoidalPositionEncoder
    normalize_before: true
    kernel_size: 11
    sanm_shfit: 0
    selfattention_layer_type: sanm

model: SenseVoiceSmall
model_conf:
    length_normalized_loss: true
    sos: 1
    eos: 2
    ignore_id: -1

tokenizer: SentencepiecesTokenizer
tokenizer_conf:
  bpemodel: null
  unk_symbol: <unk>
  split_with_space: true

frontend: WavFrontend
frontend_conf:
    fs: 16000
    window: hamming
    n_mels: 80
    frame_length: 25
    frame_shift: 10
    lfr_m: 7
    lfr_n: 6
    cmvn_file: null
"""
CONFIGURATION = {
    "framework": "pytorch",
    "task": "auto-speech-recognition",
    "model": {"type": "funasr"},
    "file_path_metas": {
        "init_param": CHECKPOINT_NAME,
        "config": CONFIG_NAME,
        "tokenizer_conf": {"bpemodel": BPE_NAME},
        "frontend_conf": {"cmvn_file": CMVN_NAME},
    },
}
FEATURE_DIM = 560
MANIFEST_FILES = (CHECKPOINT_NAME, CONFIG_NAME, CMVN_NAME, BPE_NAME, CONFIGURATION_NAME)


# building the tiny model -------------------------------------------------------------------------


def build_tiny_sensevoice(directory: Path, seed: int = 0) -> Path:
    """The official layout with a tiny random model: model.pt, config.yaml, am.mvn, BPE, configuration.json."""
    from streamst.encoders.sensevoice.torch_backend import build_model

    directory.mkdir(parents=True, exist_ok=True)
    writer = io.BytesIO()
    spm.SentencePieceTrainer.Train(
        sentence_iterator=iter(CORPUS * 20), model_writer=writer, vocab_size=120, model_type="bpe",
        character_coverage=1.0, user_defined_symbols=list(TAGS), hard_vocab_limit=False,
        unk_id=0, bos_id=1, eos_id=2, minloglevel=2, num_threads=1,
    )  # fmt: skip
    (directory / BPE_NAME).write_bytes(writer.getvalue())
    (directory / CONFIG_NAME).write_text(TINY_CONFIG, encoding="utf-8")
    (directory / CONFIGURATION_NAME).write_text(json.dumps(CONFIGURATION, indent=2), encoding="utf-8")
    rng = np.random.default_rng(seed)
    write_cmvn(directory / CMVN_NAME, -rng.uniform(8, 14, FEATURE_DIM), rng.uniform(0.2, 0.4, FEATURE_DIM))
    torch.manual_seed(seed)
    model = build_model(read_config(directory / CONFIG_NAME), Vocabulary(directory / BPE_NAME).size)
    torch.save(model.state_dict(), directory / CHECKPOINT_NAME)
    return directory


def write_cmvn(path: Path, shift: np.ndarray, scale: np.ndarray) -> None:
    def vector(values: np.ndarray) -> str:
        return " ".join(f"{v:.6f}" for v in values)

    n = len(shift)
    path.write_text(
        f"<Nnet>\n<Splice> {n} {n}\n[ 0 ]\n<AddShift> {n} {n}\n<LearnRateCoef> 0 [ {vector(shift)} ]\n"
        f"<Rescale> {n} {n}\n<LearnRateCoef> 0 [ {vector(scale)} ]\n</Nnet>\n",
        encoding="utf-8",
    )


def write_manifest(manifests: Path, model_dir: Path, name: str = MODEL_NAME) -> None:
    """A registry manifest pinning the tiny model's files, so it loads through the registry."""
    import hashlib

    manifests.mkdir(parents=True, exist_ok=True)
    entries = []
    for file in MANIFEST_FILES:
        data = (model_dir / file).read_bytes()
        entries.append(
            f'[[files]]\npath = "{file}"\nsize = {len(data)}\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n'
        )
    hub_files = ", ".join(f'"{f}" = "{f}"' for f in MANIFEST_FILES)
    (manifests / f"{name}.toml").write_text(
        f'name = "{name}"\nrole = "asr"\nformat = "sensevoice"\n'
        f'description = "tiny random SenseVoiceSmall for tests"\nlicence = "Apache-2.0"\n\n'
        + "\n".join(entries)
        + f'\n[sources.hub]\nprovider = "huggingface"\nrepo = "streamst-tests/{name}"\nrevision = "main"\n'
        f"files = {{ {hub_files} }}\n",
        encoding="utf-8",
    )


@pytest.fixture(scope="session")
def tiny_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A streamst home with the tiny model (and its ONNX exports) in models/sensevoice-small."""
    home = tmp_path_factory.mktemp("sensevoice-home")
    model_dir = build_tiny_sensevoice(home / "models" / MODEL_NAME)
    write_manifest(home / "manifests", model_dir)
    export_onnx(model_dir, quantize=True)
    return home


@pytest.fixture
def tiny_registry(tiny_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Points the registry at the tiny home for one test; returns the model directory."""
    monkeypatch.setenv("STREAMST_HOME", str(tiny_home))
    monkeypatch.setenv("STREAMST_MANIFESTS", str(tiny_home / "manifests"))
    registry.verify(MODEL_NAME)
    return registry.model_path(MODEL_NAME)


@pytest.fixture(scope="session")
def encoders(tiny_home: Path) -> dict:
    model_dir = tiny_home / "models" / MODEL_NAME
    return {
        "torch": load_sensevoice(model_dir, SenseVoiceOptions(backend="torch", device="cpu")),
        "onnx": load_sensevoice(model_dir, SenseVoiceOptions(backend="onnx", device="cpu")),
        "int8": load_sensevoice(model_dir, SenseVoiceOptions(backend="onnx", onnx_file=ONNX_QUANT_NAME, device="cpu")),
    }


def noise(seconds: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE_HZ)
    envelope = 0.5 + 0.5 * np.sin(np.linspace(0, 12 * np.pi, n))
    return (0.2 * envelope * rng.standard_normal(n)).astype(np.float32)


# loading ------------------------------------------------------------------------------------------


def test_loads_through_the_registry(tiny_registry: Path) -> None:
    assert registry.pull_state(MODEL_NAME) == "pulled"
    encoder = load_sensevoice(tiny_registry)
    assert encoder.runner.name == "onnx", "an exported model.onnx beside model.pt is preferred"
    assert encoder.supports("zh") and encoder.supports("yue") and not encoder.supports("de")
    transcript = encoder.transcribe(noise(2.0), "zh", window_start_ms=500)
    assert (transcript.window_start_ms, transcript.window_end_ms, transcript.language) == (500, 2500, "zh")


def test_onnx_backend_runs_without_torch(tiny_home: Path) -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['torch'] = sys.modules['funasr'] = None  # any import of them fails\n"
        "import numpy as np\n"
        "from streamst.encoders.sensevoice import SenseVoiceOptions, load_sensevoice\n"
        f"encoder = load_sensevoice({str(tiny_home / 'models' / MODEL_NAME)!r}, SenseVoiceOptions(backend='onnx'))\n"
        "words = encoder.transcribe(np.zeros(16000, dtype=np.float32) + 0.01, 'en', 0).words\n"
        "print(encoder.runner.name, type(words).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["onnx", "tuple"]


def test_auto_backend_falls_back_to_torch_without_onnx(tiny_home: Path, tmp_path: Path) -> None:
    model_dir = shutil.copytree(tiny_home / "models" / MODEL_NAME, tmp_path / "m")
    (model_dir / ONNX_NAME).unlink()
    assert load_sensevoice(model_dir).runner.name == "torch"


# torch ↔ ONNX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0.5, 1.7, 4.0])
def test_torch_and_onnx_agree(encoders: dict, seconds: float) -> None:
    torch_encoder, onnx_encoder = encoders["torch"], encoders["onnx"]
    features = torch_encoder.frontend.features(noise(seconds))
    n_fbank_frames = 1 + (int(seconds * SAMPLE_RATE_HZ) - 400) // 160  # 25 ms windows every 10 ms
    assert features.shape == (-(-n_fbank_frames // 6), FEATURE_DIM)  # one row per 6 fbank frames
    for language_id, textnorm_id in [(4, 14), (3, 15), (0, 14)]:
        a = torch_encoder.runner.log_probs(features, language_id, textnorm_id)
        b = onnx_encoder.runner.log_probs(features, language_id, textnorm_id)
        assert a.shape == b.shape == (N_QUERY_FRAMES + len(features), torch_encoder.vocabulary.size)
        np.testing.assert_allclose(a, b, atol=LOGPROB_ATOL, rtol=0)
    ta = torch_encoder.recognize(noise(seconds), "en", 1000).transcript
    tb = onnx_encoder.recognize(noise(seconds), "en", 1000).transcript
    assert [(w.text, w.start_ms, w.end_ms) for w in ta.words] == [(w.text, w.start_ms, w.end_ms) for w in tb.words]


def test_int8_model_runs_and_mostly_agrees(encoders: dict) -> None:
    features = encoders["torch"].frontend.features(noise(3.0))
    a = encoders["torch"].runner.log_probs(features, 4, 14)
    c = encoders["int8"].runner.log_probs(features, 4, 14)
    assert c.shape == a.shape and np.isfinite(c).all()
    assert (a.argmax(axis=1) == c.argmax(axis=1)).mean() >= INT8_MIN_ARGMAX_AGREEMENT


# front end ----------------------------------------------------------------------------------------


def test_front_end_matches_funasr_wav_frontend(encoders: dict, tiny_home: Path) -> None:
    from funasr.frontends.wav_frontend import WavFrontend

    model_dir = tiny_home / "models" / MODEL_NAME
    reference = WavFrontend(cmvn_file=str(model_dir / CMVN_NAME), window="hamming", n_mels=80, frame_length=25,
                            frame_shift=10, lfr_m=7, lfr_n=6, dither=0.0)  # fmt: skip
    for seconds in (0.03, 0.5, 2.37):
        audio = noise(seconds, seed=3)
        expected, _ = reference(torch.from_numpy(audio)[None], torch.tensor([len(audio)]))
        np.testing.assert_allclose(encoders["onnx"].frontend.features(audio), expected[0].numpy(), atol=1e-5, rtol=0)


# decoding, tags, timestamps -------------------------------------------------------------------------


def test_tags_become_fields_and_tokens_become_timed_words(encoders: dict) -> None:
    vocabulary = encoders["onnx"].vocabulary
    tags = ["<|en|>", "<|NEUTRAL|>", "<|Speech|>", "<|withitn|>"]
    text_ids = [i for i in _encode(vocabulary, "Hello world, 区块") if i != 0]
    frames = [vocabulary.id_of(t) for t in tags]  # the four query frames
    for token_id in text_ids:  # each text token on two frames, then a blank
        frames += [token_id, token_id, 0]
    log_probs = np.full((len(frames), vocabulary.size), -20.0, dtype=np.float32)
    log_probs[np.arange(len(frames)), frames] = -0.01
    decoded = decode(log_probs, vocabulary, frame_ms=60.0, audio_ms=10_000)
    assert [(t.kind, t.value) for t in decoded.tags] == [
        ("language", "en"), ("emotion", "NEUTRAL"), ("event", "Speech"), ("itn", "withitn")
    ]  # fmt: skip
    words = decoded.words
    assert "".join(w.text for w in words).strip() == vocabulary.decode(text_ids)
    assert [w.text.strip() for w in words][-2:] == ["区", "块"], "each CJK piece is a word of its own"
    assert words[1].text.endswith(","), "punctuation joins the word before it"
    first = [vocabulary.piece(i) for i in _encode(vocabulary, "Hello")]  # may start with a bare "▁"
    first_frame, last_frame = 3 * (first[0] == "▁"), 3 * (len(first) - 1) + 1  # speech frames of "Hello"
    assert (words[0].start_ms, words[0].end_ms) == (max(first_frame * 60 - 30, 0), (last_frame + 1) * 60 - 30)
    _check_timed(words, 0, 10_000)


def test_result_carries_tags_and_shifted_times(encoders: dict) -> None:
    result = encoders["onnx"].recognize(noise(3.0), "ja", window_start_ms=2_000)
    assert result.transcript.language == "ja"
    assert isinstance(result.events, tuple) and isinstance(result.emotion, str)
    _check_timed(result.transcript.words, 2_000, 5_000)


@pytest.mark.parametrize("backend", ["torch", "onnx", "int8"])
def test_timestamps_are_monotonic_and_inside_the_window(encoders: dict, backend: str) -> None:
    encoder = encoders[backend]
    for seconds, start_ms in [(0.8, 0), (2.5, 1_234), (6.0, 60_000)]:
        transcript = encoder.transcribe(noise(seconds, seed=int(seconds * 10)), "en", start_ms)
        assert transcript.words, "random weights still emit tokens"
        _check_timed(transcript.words, start_ms, start_ms + int(seconds * 1000))


def test_growing_window_reruns_are_deterministic(encoders: dict) -> None:
    audio = noise(4.0)
    for encoder in (encoders["torch"], encoders["onnx"]):
        first = encoder.transcribe(audio[: 2 * SAMPLE_RATE_HZ], "zh", 0)
        again = encoder.transcribe(audio[: 2 * SAMPLE_RATE_HZ], "zh", 0)
        assert first == again


def test_empty_and_too_short_audio_give_no_words(encoders: dict) -> None:
    for n_samples in (0, 100, 399):
        transcript = encoders["onnx"].transcribe(np.zeros(n_samples, dtype=np.float32), "en", 7_000)
        assert transcript.words == () and transcript.window_start_ms == 7_000


def test_unsupported_language_is_refused(encoders: dict) -> None:
    with pytest.raises(OptionsError, match="cannot transcribe 'de'"):
        encoders["onnx"].transcribe(noise(1.0), "de", 0)


def test_options_are_validated() -> None:
    with pytest.raises(OptionsError, match="backend"):
        SenseVoiceOptions(backend="tensorrt")
    with pytest.raises(OptionsError, match="device"):
        SenseVoiceOptions(device="tpu")


# clear errors for broken directories ----------------------------------------------------------------


@pytest.fixture
def model_copy(tiny_home: Path, tmp_path: Path) -> Path:
    return shutil.copytree(tiny_home / "models" / MODEL_NAME, tmp_path / "model")


@pytest.mark.parametrize("missing, expected", [
    (CONFIG_NAME, "config.yaml .*configuration"),
    (CMVN_NAME, "am.mvn .*CMVN"),
    (BPE_NAME, "bpe.model .*SentencePiece"),
])  # fmt: skip
def test_missing_file_is_named(model_copy: Path, missing: str, expected: str) -> None:
    (model_copy / missing).unlink()
    with pytest.raises(ModelError, match=expected):
        load_sensevoice(model_copy)


def test_missing_directory_and_weights_are_named(model_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_sensevoice(tmp_path / "nowhere")
    for name in (ONNX_NAME, CHECKPOINT_NAME):
        (model_copy / name).unlink()
    with pytest.raises(ModelError, match=f"neither {ONNX_NAME} nor {CHECKPOINT_NAME}"):
        load_sensevoice(model_copy)


@pytest.mark.parametrize("old, new, expected", [
    ("model: SenseVoiceSmall", "model: Paraformer", "model is 'Paraformer', expected 'SenseVoiceSmall'"),
    ("output_size: 32", "output_size: -1", "encoder_conf.output_size must be a positive integer"),
    ("lfr_m: 7", "lfr_m: seven", "frontend_conf holds a value that is not a number"),
    ("encoder: SenseVoiceEncoderSmall", "encoder: [", "not a readable YAML file"),
])  # fmt: skip
def test_malformed_config_is_explained(model_copy: Path, old: str, new: str, expected: str) -> None:
    path = model_copy / CONFIG_NAME
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    with pytest.raises(ModelError, match=expected):
        load_sensevoice(model_copy)


def test_malformed_cmvn_is_explained(model_copy: Path) -> None:
    path = model_copy / CMVN_NAME
    path.write_text("<Nnet>\n<AddShift> 560 560\n</Nnet>\n", encoding="utf-8")
    with pytest.raises(ModelError, match="no <AddShift> or <Rescale> vector"):
        load_cmvn(path)
    write_cmvn(path, np.zeros(80), np.ones(80))
    with pytest.raises(ModelError, match="holds 80 values per frame but the front end makes 560"):
        load_sensevoice(model_copy)


def test_checkpoint_that_does_not_match_the_config_is_explained(model_copy: Path) -> None:
    (model_copy / ONNX_NAME).unlink()
    path = model_copy / CONFIG_NAME
    path.write_text(path.read_text(encoding="utf-8").replace("linear_units: 64", "linear_units: 48"), encoding="utf-8")
    with pytest.raises(ModelError, match=r"does not match config.yaml: .*tensors of another shape"):
        load_sensevoice(model_copy)
    (model_copy / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="not a readable PyTorch state dict"):
        load_sensevoice(model_copy)


def test_bpe_model_of_another_size_is_explained(model_copy: Path) -> None:
    writer = io.BytesIO()
    spm.SentencePieceTrainer.Train(sentence_iterator=iter(CORPUS * 20), model_writer=writer, vocab_size=80,
                                   model_type="bpe", hard_vocab_limit=False, minloglevel=2, num_threads=1)  # fmt: skip
    (model_copy / BPE_NAME).write_bytes(writer.getvalue())
    with pytest.raises(ModelError, match="outputs but .*bpe.model has .* pieces"):
        load_sensevoice(model_copy)
    (model_copy / BPE_NAME).write_bytes(b"garbage")
    with pytest.raises(ModelError, match="is not a SentencePiece model"):
        load_sensevoice(model_copy)


def test_onnx_file_of_another_kind_is_explained(model_copy: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )  # fmt: skip
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8), str(model_copy / ONNX_NAME)
    )
    with pytest.raises(ModelError, match="is not a SenseVoice encoder export"):
        load_sensevoice(model_copy)


# helpers ------------------------------------------------------------------------------------------


def _encode(vocabulary: Vocabulary, text: str) -> list[int]:
    processor = spm.SentencePieceProcessor()
    processor.Load(str(vocabulary.path))
    return processor.EncodeAsIds(text)


def _check_timed(words, start_ms: int, end_ms: int) -> None:
    last_start = start_ms
    for w in words:
        assert start_ms <= w.start_ms <= w.end_ms <= end_ms, (w, start_ms, end_ms)
        assert w.start_ms >= last_start, words
        assert 0.0 <= w.probability <= 1.0
        last_start = w.start_ms
