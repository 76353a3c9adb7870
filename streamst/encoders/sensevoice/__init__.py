"""SenseVoiceSmall (FunAudioLLM): a non-autoregressive CTC speech encoder for zh, en, yue, ja, ko.

    from streamst.encoders.sensevoice import SenseVoiceOptions, load_sensevoice
    encoder = load_sensevoice(model_dir)                      # official iic/SenseVoiceSmall layout
    result = encoder.recognize(audio, "en", window_start_ms=0)  # words with times + language/emotion/event tags

Modules: `layout` (the official files and config.yaml), `frontend` (fbank + LFR + CMVN),
`tokens` (BPE vocabulary, tags, query ids), `ctc` (greedy decoding, timestamps, words),
`torch_backend` (FunASR's model on PyTorch), `onnx_backend` (onnxruntime), `export` (ONNX, int8),
`encoder` (the `SpeechEncoder`). Importing this package loads no heavy library.
"""

from streamst.encoders.sensevoice.encoder import SenseVoiceEncoder, SenseVoiceOptions, SenseVoiceResult, load_sensevoice
from streamst.encoders.sensevoice.tokens import SENSEVOICE_LANGUAGES

__all__ = ["SENSEVOICE_LANGUAGES", "SenseVoiceEncoder", "SenseVoiceOptions", "SenseVoiceResult", "load_sensevoice"]
