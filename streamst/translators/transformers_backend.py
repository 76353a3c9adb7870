"""Qwen (or any ChatML causal LM) through Hugging Face transformers on PyTorch, for GPU deployments.

The same contract as the llama.cpp backend: greedy decoding with token log-probs, text held back
while a UTF-8 character is split across tokens, a loop guard, and canonical prefill (the prompt
head, fixed per language pair, is always evaluated as its own batch and kept in the KV cache;
a request continuing the same stream also reuses the source tokens it shares with the last one).
bfloat16 on CUDA, float32 on the CPU, unless told otherwise.
"""

from __future__ import annotations

import codecs
import functools
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamst.errors import ModelError, OptionsError
from streamst.languages import Language
from streamst.translators.base import Translator
from streamst.translators.decoding import common_prefix_length, flush_pending, is_looping, plan_prompt
from streamst.translators.prompt import IM_END, PromptStyle, chat_prompt
from streamst.types import TokenStep, Translation

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

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise OptionsError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise OptionsError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        if self.n_ctx < 256:
            raise OptionsError(f"n_ctx must be at least 256 tokens, got {self.n_ctx}")


class TransformersTranslator(Translator):
    """A Hugging Face model directory (config.json, weights, tokenizer files)."""

    name = "transformers"

    def __init__(self, model_dir: Path, options: TransformersOptions = TransformersOptions()) -> None:
        torch, transformers = _import()
        self.options = options
        self.device = _device(torch, options.device)
        self.dtype = _dtype(torch, options.dtype, self.device)
        try:
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
            self._model = transformers.AutoModelForCausalLM.from_pretrained(
                str(model_dir), **{_dtype_keyword(transformers.__version__): self.dtype}
            )
        except Exception as e:
            raise ModelError(f"cannot load the translator model in {model_dir}: {e}") from e
        self._model.to(self.device).eval()
        self._stop_ids = self._find_stop_ids()
        self._token_bytes = TokenBytes(self._tokenizer)
        self._lock = threading.Lock()
        self._cache: Any = None
        self._cached_ids: list[int] = []  # the tokens whose keys and values the cache holds
        self._last_stream_key: object | None = None
        log.info("translator %s on %s (%s)", model_dir, self.device, str(self.dtype).removeprefix("torch."))

    def translate(
        self,
        source_text: str,
        source: Language,
        target: Language,
        committed: str = "",
        max_new_tokens: int | None = None,
        stream_key: object | None = None,
    ) -> Translation:
        import torch

        parts = chat_prompt(source_text, source, target, committed, self.options.style)
        o = self.options
        with self._lock, torch.inference_mode():
            plan = plan_prompt(
                self._tokenize, parts, max_new_tokens, o.min_new_tokens_cap, o.new_tokens_per_source_token, o.n_ctx
            )
            tokens, max_new_tokens = plan.tokens, plan.max_new_tokens
            reuse_source = stream_key is not None and stream_key == self._last_stream_key
            self._last_stream_key = stream_key
            try:
                logits, n_prefill = self._prefill(tokens, plan.n_head, reuse_source)
                steps, finished = self._decode(logits, max_new_tokens)
            except Exception:
                self._cache, self._cached_ids = None, []  # a forward pass may have half-updated it
                raise
        return Translation(
            text="".join(s.text for s in steps),
            tokens=tuple(steps),
            n_prompt_tokens=len(tokens),
            n_prefill_tokens=n_prefill,
            finished=finished,
        )

    def _tokenize(self, text: str, special: bool) -> list[int]:
        """`special`: whether special-token strings in `text` become special tokens (else plain text)."""
        if not text:
            return []
        return list(self._tokenizer(text, add_special_tokens=False, split_special_tokens=not special)["input_ids"])

    def _prefill(self, tokens: list[int], n_head: int, reuse_source: bool) -> tuple[Any, int]:
        """Evaluates what the cache does not hold (at least the last token, for its logits);
        returns the last logits and how many tokens were evaluated."""
        n_common = common_prefix_length(self._cached_ids, tokens)
        n_evaluated = 0
        if n_common < n_head or self._cache is None:
            self._cache, self._cached_ids = self._new_cache(), []
            self._forward(tokens[:n_head])
            n_evaluated += n_head
            n_keep = n_head
        else:
            n_keep = n_common if reuse_source else n_head
        n_keep = min(n_keep, len(tokens) - 1)
        self._crop(n_keep)
        logits = self._forward(tokens[n_keep:])
        return logits, n_evaluated + len(tokens) - n_keep

    def _decode(self, logits: Any, max_new_tokens: int) -> tuple[list[TokenStep], bool]:
        """Greedy decoding; each step's text holds back bytes of a character split across tokens."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        steps: list[TokenStep] = []
        ids: list[int] = []
        for _ in range(max_new_tokens):
            logprobs = logits.float().log_softmax(dim=-1)
            token_id = int(logprobs.argmax())
            if token_id in self._stop_ids:
                return flush_pending(steps, decoder), True
            text = decoder.decode(self._token_bytes(token_id))
            steps.append(TokenStep(token_id, text, float(logprobs[token_id])))
            ids.append(token_id)
            if is_looping(ids):
                log.info("translation fell into a loop after %d tokens; cut", len(ids))
                return flush_pending(steps, decoder), False
            logits = self._forward([token_id])
        return flush_pending(steps, decoder), False

    def _forward(self, token_ids: list[int]) -> Any:
        """Runs `token_ids` after the cached tokens; returns the logits of the last one."""
        import torch

        input_ids = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        out = self._model(input_ids=input_ids, past_key_values=self._cache, use_cache=True)
        self._cache = out.past_key_values
        self._cached_ids = self._cached_ids + token_ids
        return out.logits[0, -1]

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self._model.config)
        except TypeError:
            return DynamicCache()

    def _crop(self, n_tokens: int) -> None:
        n_remove = len(self._cached_ids) - n_tokens
        if n_remove > 0:
            self._cache.crop(-n_remove)  # a negative count removes tokens in transformers 4.x and 5.x alike
            self._cached_ids = self._cached_ids[:n_tokens]

    def _find_stop_ids(self) -> frozenset[int]:
        ids = {self._tokenizer.eos_token_id}
        generation_eos = getattr(self._model.generation_config, "eos_token_id", None)
        ids.update(generation_eos if isinstance(generation_eos, list) else [generation_eos])
        im_end = self._tokenizer.convert_tokens_to_ids(IM_END)
        if im_end is not None and im_end != self._tokenizer.unk_token_id:
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
