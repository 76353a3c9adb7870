"""Qwen (or any ChatML causal LM) through Hugging Face transformers on PyTorch, for GPU deployments.

The same contract as the llama.cpp backend, through the same `GreedyTranslator` (greedy steps with
log-probs, UTF-8 hold-back, loop guard, canonical prefill, stream prefix reuse); this module only
evaluates tokens with one `DynamicCache` (one slot). bfloat16 on CUDA, float32 on the CPU, unless
told otherwise.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamst.errors import ModelError, OptionsError
from streamst.translators.greedy import DecoderBackend, GreedyTranslator
from streamst.translators.prompt import IM_END, PromptStyle

log = logging.getLogger("streamst.translators.transformers")

INSTALL = "pip install 'streamst[torch]' (torch==2.13.0 first, then transformers)"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DTYPE_KEYWORD_SINCE = (4, 56)  # transformers renamed from_pretrained's `torch_dtype` to `dtype`


@dataclass(frozen=True)
class TransformersOptions:
    device: str = "auto"  # "cpu", "cuda", or "auto": CUDA when PyTorch sees a GPU
    dtype: str = "auto"  # "auto": bfloat16 on CUDA, float32 on the CPU; or float32 / bfloat16 / float16
    n_ctx: int = 2048  # context window in tokens (prompt + translation)
    min_new_tokens_cap: int = 32  # the cap on new tokens is at least this ...
    new_tokens_per_source_token: float = 2.5  # ... or this many per source token
    style: PromptStyle = field(default_factory=PromptStyle)
    target_fidelity: bool = True  # mask other scripts' tokens, retry a copy of the source, cut a comment (streamst.writing)

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise OptionsError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise OptionsError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.n_ctx < 256:
            raise OptionsError(f"n_ctx must be at least 256 tokens, got {self.n_ctx}")


class TransformersTranslator(GreedyTranslator):
    """A Hugging Face model directory (config.json, weights, tokenizer files)."""

    name = "transformers"

    def __init__(self, model_dir: Path, options: TransformersOptions = TransformersOptions()) -> None:
        backend = TransformersBackend(model_dir, options)
        super().__init__(backend, options)
        self.device, self.dtype = backend.device, backend.dtype


class TransformersBackend(DecoderBackend):
    """A causal LM and its `DynamicCache`."""

    def __init__(self, model_dir: Path, options: TransformersOptions) -> None:
        torch, transformers = _import()
        self.device = _device(torch, options.device)
        self.dtype = _dtype(torch, options.dtype, self.device)
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                str(model_dir), **{_dtype_keyword(transformers.__version__): self.dtype}
            )
        except Exception as e:
            raise ModelError(f"cannot load the translator model in {model_dir} with transformers: {e}") from e
        self.model.to(self.device).eval()
        self._stop_ids = _find_stop_ids(self.tokenizer, self.model)
        self._token_bytes = TokenBytes(self.tokenizer)
        self._cache: Any = None  # created by the first evaluate after the cache was emptied
        self._cached_ids: list[int] = []  # the tokens whose keys and values the cache holds
        log.info("translator %s on %s (%s)", model_dir, self.device, str(self.dtype).removeprefix("torch."))

    @property
    def stop_ids(self) -> frozenset[int]:
        return self._stop_ids

    def tokenize(self, text: str, special: bool) -> list[int]:
        if not text:
            return []
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=not special)["input_ids"])

    def cached_tokens(self, slot: int) -> Sequence[int]:
        return self._cached_ids

    def keep(self, slot: int, n_tokens: int) -> None:
        if n_tokens == 0:
            self._cache, self._cached_ids = None, []
            return
        n_remove = len(self._cached_ids) - n_tokens
        if n_remove > 0:
            import torch

            with torch.inference_mode():
                self._cache.crop(-n_remove)  # a negative count removes tokens in transformers 4.x and 5.x alike
            self._cached_ids = self._cached_ids[:n_tokens]

    def evaluate(self, slot: int, token_ids: Sequence[int]) -> np.ndarray:
        import torch

        if self._cache is None:
            self._cache = self._new_cache()
        try:
            with torch.inference_mode():
                input_ids = torch.tensor([list(token_ids)], dtype=torch.long, device=self.device)
                out = self.model(input_ids=input_ids, past_key_values=self._cache, use_cache=True)
                logits = out.logits[0, -1].float().cpu().numpy()
        except Exception:
            self._cache, self._cached_ids = None, []  # the forward pass may have half-updated the cache
            raise
        self._cache = out.past_key_values
        self._cached_ids = self._cached_ids + list(token_ids)
        return logits

    def token_bytes(self, token_id: int) -> bytes:
        return self._token_bytes(token_id)

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:
            return DynamicCache()


def _find_stop_ids(tokenizer: Any, model: Any) -> frozenset[int]:
    ids = {tokenizer.eos_token_id}
    generation_eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(generation_eos if isinstance(generation_eos, list) else [generation_eos])
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    if im_end is not None and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return frozenset(i for i in ids if isinstance(i, int))


class TokenBytes:
    """token id → the bytes it stands for, so text can be held back while a character is split.

    Exact for byte-level BPE tokenizers (Qwen, GPT-2 style); other tokenizers fall back to
    decoding the token alone."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._byte_level = _is_byte_level(tokenizer)
        self._special = frozenset(tokenizer.all_special_ids)
        self._byte_of = {ch: b for b, ch in _bytes_to_unicode().items()}
        self._known: dict[int, bytes] = {}

    def __call__(self, token_id: int) -> bytes:
        if token_id not in self._known:
            self._known[token_id] = self._lookup(token_id)
        return self._known[token_id]

    def _lookup(self, token_id: int) -> bytes:
        if self._byte_level and token_id not in self._special:
            piece = self._tokenizer.convert_ids_to_tokens(token_id)
            if isinstance(piece, str) and all(ch in self._byte_of for ch in piece):
                return bytes(self._byte_of[ch] for ch in piece)
        return self._tokenizer.decode([token_id], skip_special_tokens=True).encode("utf-8")


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    try:
        decoder = json.loads(backend.to_str()).get("decoder") or {}
    except (ValueError, AttributeError):
        return False
    kinds = [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders", []) if isinstance(d, dict)]
    return "ByteLevel" in kinds


@functools.lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table used by byte-level BPE."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    n_extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n_extra)
            n_extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def _import() -> tuple[Any, Any]:
    try:
        import torch
    except ImportError as e:
        raise ModelError(f"the transformers translator needs PyTorch: {INSTALL}") from e
    try:
        import transformers
    except ImportError as e:
        raise ModelError(f"the transformers translator needs transformers: {INSTALL}") from e
    return torch, transformers


def _device(torch: Any, device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' was asked for but PyTorch sees no CUDA GPU; use device 'cpu' or 'auto'")
    return device


def _dtype(torch: Any, dtype: str, device: str) -> Any:
    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, dtype)


def _dtype_keyword(version: str) -> str:
    major_minor = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    return "dtype" if major_minor >= DTYPE_KEYWORD_SINCE else "torch_dtype"
