"""A translator on an OpenAI-compatible completion server: llama.cpp's `llama-server`, vLLM, SGLang.

The serving engine batches every stream's requests continuously and caches shared prompt
prefixes, so the decoder can run on another machine (a GPU) and serve many `streamst-server`
replicas. Each request is a raw-prompt completion (`POST {url}/completions`): the ChatML prompt of
`streamst.translators.prompt` sent as text, exactly, ending in the committed target, so a stream's
growing prompt shares its prefix with its previous request and the engine's prefix cache skips it.
Greedy (`temperature` 0), the chosen token's log-prob per token (`logprobs: 1`) for the policies,
ChatML's end tokens as stop strings, and the same cap on new tokens as in-process
(`streamst.translators.decoding.new_tokens_cap`).

What the in-process decoder does that this one cannot, token by token on someone else's server:
- no script mask: a Chinese translation may write Latin words that are not the source's names;
- a translation that copies its Latin-script source is decoded again with the copied words unable
  to start (their first tokens from the server's /tokenize, banned by `logit_bias`), without the
  script mask; a retry that copies again, or a server without /tokenize, commits nothing;
- the loop guard runs on the returned tokens (a loop is cut where it starts), not on the prompt's
  committed target;
- the source's token count (for the cap) is estimated from its UTF-8 length, on the high side;
- token ids are the server's where it returns them (llama-server does), else a stable stand-in
  (CRC-32 of the token's bytes): the policies only read the text and the log-prob.

Requests are not serialised here: the server batches them. Connection failures and 502/503/504
answers are retried a bounded number of times; then `TranslatorUnavailableError` names the URL
and the fix, and a direct session hands the segment to the cascade way (`DirectSession.step_failed`)."""

from __future__ import annotations

import ast
import codecs
import logging
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from streamst.errors import ModelError, OptionsError, TranslatorUnavailableError
from streamst.languages import Language
from streamst.translators.base import Translator
from streamst.translators.decoding import cut_commentary, flush_pending, new_tokens_cap, repeated_tail
from streamst.translators.masks import word_start_ids
from streamst.translators.prompt import IM_END, PromptStyle, chat_prompt
from streamst.types import TokenStep, Translation
from streamst.writing import commentary_words, copied_words, may_copy

log = logging.getLogger("streamst.translators.openai_server")

STOP_STRINGS = (IM_END, "<|endoftext|>")  # ChatML's end of turn; Qwen's end of text
BANNED_BIAS = -100.0  # OpenAI's lowest logit bias: the token is never chosen
RETRIED_STATUSES = (502, 503, 504)  # a balancer without a backend, a server still loading its model
INSTALL = "pip install requests"
PROBE_TIMEOUT_S = 2.0  # a reachability probe's connection and answer, each


@dataclass(frozen=True)
class ServerOptions:
    url: str  # the API's base URL, ending in /v1 (http://127.0.0.1:8080/v1)
    model: str = ""  # the model name the server serves; "" = the first one GET {url}/models lists
    api_key: str = ""  # sent as 'Authorization: Bearer …' when set (vLLM --api-key, llama-server --api-key)
    timeout_s: float = 30.0  # one completion, from sending to the last byte of the answer
    connect_timeout_s: float = 3.0  # opening the connection
    n_retries: int = 2  # retries of a refused connection or a 502/503/504 answer (never of a timed-out request)
    backoff_s: float = 0.25  # the first retry waits this long, each further one twice as long
    min_new_tokens_cap: int = 32  # the cap on new tokens is at least this ...
    new_tokens_per_source_token: float = 2.5  # ... or this many per source token
    utf8_bytes_per_source_token: float = 3.0  # estimates the source's tokens (Qwen: ~4.5 for English, ~3 for CJK)
    style: PromptStyle = field(default_factory=PromptStyle)
    copy_check: bool = True  # a translation that copies its Latin-script source, or comments on itself, is not committed

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise OptionsError(
                f"translator URL {self.url!r} is not an http(s) URL; give the server's API base, "
                "such as http://127.0.0.1:8080/v1"
            )
        for name in ("timeout_s", "connect_timeout_s", "utf8_bytes_per_source_token"):
            if getattr(self, name) <= 0:
                raise OptionsError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_retries < 0 or self.backoff_s < 0:
            raise OptionsError(f"n_retries and backoff_s cannot be negative, got {self.n_retries}, {self.backoff_s}")

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")


@dataclass(frozen=True)
class Completion:
    """What one completion request returned, parsed."""

    steps: tuple[TokenStep, ...]  # the new tokens, stop strings excluded
    stopped: bool  # the model ended it (a stop string or its end token), not the cap
    n_prompt_tokens: int
    n_cached_tokens: int  # prompt tokens the server's prefix cache already held


class OpenAIServerTranslator(Translator):
    """Greedy translation on an OpenAI-compatible completion server; thread-safe, not serialised."""

    name = "openai-server"

    def __init__(self, options: ServerOptions) -> None:
        try:
            import requests
        except ImportError as e:
            raise ModelError(f"the server translator needs the requests package: {INSTALL}") from e
        self.options = options
        self._requests = requests
        self._local = threading.local()  # one HTTP session (connection pool) per calling thread
        self._model_lock = threading.Lock()
        self._model = options.model

    # Translator ------------------------------------------------------------------------------------

    def translate(
        self,
        source_text: str,
        source: Language,
        target: Language,
        committed: str = "",
        max_new_tokens: int | None = None,
        stream_key: object | None = None,
        earlier: Sequence[tuple[str, str]] = (),
    ) -> Translation:
        o = self.options
        parts = chat_prompt(source_text, source, target, committed, o.style, earlier)
        n_source_tokens = int(len(source_text.encode("utf-8")) / o.utf8_bytes_per_source_token) + 1
        cap = new_tokens_cap(n_source_tokens, max_new_tokens, o.min_new_tokens_cap, o.new_tokens_per_source_token)
        prompt = parts.head_text + parts.source + parts.tail
        completion = self.complete(prompt, cap)
        steps, looped = cut_loop(completion.steps)
        text = "".join(step.text for step in steps)
        copied = copied_words(text, source_text) if o.copy_check and may_copy(source, target) else []
        if copied:
            nothing = Completion((), False, completion.n_prompt_tokens, completion.n_cached_tokens)
            completion = self._retry_copy(prompt, cap, copied, source_text) or nothing
            steps, looped = cut_loop(completion.steps)
        finished = completion.stopped and not looped
        kept = cut_commentary(steps, source_text, source, target) if o.copy_check else None
        if kept is not None:
            steps, finished = self._retry_commentary(prompt, cap, kept, source_text, source, target)
        return Translation(
            text="".join(step.text for step in steps),
            tokens=tuple(steps),
            n_prompt_tokens=completion.n_prompt_tokens,
            n_prefill_tokens=completion.n_prompt_tokens - completion.n_cached_tokens,
            finished=finished,
        )

    def _retry_copy(self, prompt: str, cap: int, copied: Sequence[str], source_text: str) -> Completion | None:
        """The completion again with the copied words (three letters or more) unable to start, as the
        in-process decoder retries (`word_start_ids`, through the server's /tokenize and a
        `logit_bias`); None when the retry copies again, or the server cannot tokenize (then the
        translation is not committed)."""
        words = sorted({w.lower() for w in copied if len(w) >= 3})
        log.info("translation copies its source (%d words); retrying without %s", len(copied), ", ".join(words[:8]))
        completion = self._complete_without(prompt, cap, words)
        if completion is None:
            log.warning("translation copies its source and cannot be retried; not committed")
            return None
        text = "".join(step.text for step in completion.steps)
        if copied_words(text, source_text):
            log.warning("translation copies its source again; not committed: %r", text[:80])
            return None
        return completion

    def _retry_commentary(
        self, prompt: str, cap: int, kept: tuple[TokenStep, ...], source_text: str, source: Language, target: Language
    ) -> tuple[tuple[TokenStep, ...], bool]:
        """(steps, finished) for a translation that commented on itself: the completion again with
        the languages' names and the words for translating unable to start, as the in-process
        decoder retries; if that comments too, copies its source, or cannot be asked, `kept` (the
        first translation cut before the comment, ending a sentence)."""
        completion = self._complete_without(prompt, cap, commentary_words(source_text, source, target))
        if completion is not None:
            steps, looped = cut_loop(completion.steps)
            text = "".join(step.text for step in steps)
            copies = self.options.copy_check and may_copy(source, target) and copied_words(text, source_text)
            if cut_commentary(steps, source_text, source, target) is None and not copies:
                return steps, completion.stopped and not looped
        log.info("translation comments on itself again; keeping %d characters", len("".join(s.text for s in kept)))
        return kept, bool(kept)

    def _complete_without(self, prompt: str, cap: int, words: Sequence[str]) -> Completion | None:
        """The completion with `words` unable to start (`word_start_ids`, through the server's
        /tokenize and a `logit_bias`); None when the server cannot tokenize."""
        try:
            ban = word_start_ids(self.tokenize, words)
        except TranslatorUnavailableError as e:
            log.warning("cannot ban words through the server's tokenizer: %s", e)
            return None
        return self.complete(prompt, cap, {str(int(i)): BANNED_BIAS for i in ban})

    # the server ------------------------------------------------------------------------------------

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """`text` → token ids by the server's tokenizer (POST /tokenize beside the API: llama-server's
        and vLLM's forms), no BOS; `special` is ignored (used for words only)."""
        if not text:
            return []
        root = self.options.base_url.removesuffix("/v1")
        body = {"content": text, "prompt": text, "model": self.model(), "add_special": False, "add_special_tokens": False}
        answer = self._request("POST", "/tokenize", body, base_url=root)
        tokens = answer.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise TranslatorUnavailableError(f"the translation server at {root} has no /tokenize that returns token ids")
        return tokens

    def complete(self, prompt: str, max_tokens: int, logit_bias: dict[str, float] | None = None) -> Completion:
        """One greedy raw-prompt completion with the chosen tokens' log-probs; `logit_bias` (token
        id → bias) bans tokens."""
        body = {
            "model": self.model(),
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "top_p": 1.0,
            "logprobs": 1,
            "stop": list(STOP_STRINGS),
            "stream": False,
        }
        if logit_bias:
            body["logit_bias"] = logit_bias
        return parse_completion(self._post("/completions", body), self.options.base_url)

    def check_reachable(self) -> None:
        """Raises `TranslatorUnavailableError` unless the server answers GET {url}/models now: one
        try with short timeouts (a readiness probe, never retried)."""
        o = self.options
        headers = {"Authorization": f"Bearer {o.api_key}"} if o.api_key else {}
        timeout_s = (min(o.connect_timeout_s, PROBE_TIMEOUT_S), PROBE_TIMEOUT_S)
        try:
            response = self._requests.get(o.base_url + "/models", headers=headers, timeout=timeout_s)
        except self._requests.exceptions.RequestException as e:
            raise TranslatorUnavailableError(
                f"cannot reach the translation server at {o.base_url} ({type(e).__name__}); "
                "is llama-server (or vLLM, SGLang) running there?"
            ) from e
        if response.status_code >= 400:
            raise TranslatorUnavailableError(_status_message(o.base_url, "/models", response.status_code, response.text))

    def model(self) -> str:
        """The model name requests carry: the configured one, else the first the server lists."""
        with self._model_lock:
            if not self._model:
                models = self._request("GET", "/models", None).get("data") or []
                if not models or "id" not in models[0]:
                    raise ModelError(
                        f"the translation server at {self.options.base_url} lists no model at /models; "
                        "name the model it serves with --translator-api-model"
                    )
                self._model = str(models[0]["id"])
                log.info("translation server at %s serves %s", self.options.base_url, self._model)
            return self._model

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None, base_url: str = "") -> dict[str, Any]:
        o = self.options
        url = (base_url or o.base_url) + path
        session = self._session()
        try:
            response = session.request(method, url, json=body, timeout=(o.connect_timeout_s, o.timeout_s))
        except self._requests.exceptions.RequestException as e:
            raise self._unavailable(e) from e
        if response.status_code >= 400:
            raise TranslatorUnavailableError(_status_message(o.base_url, path, response.status_code, response.text))
        try:
            return response.json()
        except ValueError as e:
            raise TranslatorUnavailableError(
                f"the translation server at {o.base_url} answered {path} with something that is not JSON: "
                f"{response.text[:120]!r}; is --translator-url the API's base (ending in /v1)?"
            ) from e

    def _unavailable(self, error: Exception) -> TranslatorUnavailableError:
        """The error for a request that got no answer: it timed out, or it could not connect."""
        o = self.options
        from urllib3.exceptions import ReadTimeoutError

        reason = getattr(error.args[0], "reason", None) if error.args else None
        if isinstance(error, self._requests.exceptions.ReadTimeout) or isinstance(reason, ReadTimeoutError):
            return TranslatorUnavailableError(
                f"the translation server at {o.base_url} did not answer within {o.timeout_s:g} s; "
                "it is overloaded or stuck: give it more slots or cores, or fewer streams"
            )
        return TranslatorUnavailableError(
            f"cannot reach the translation server at {o.base_url} ({type(error).__name__}, "
            f"{1 + o.n_retries} attempts); is llama-server (or vLLM, SGLang) running at {o.base_url}? "
            "Start it, or point --translator-url at it"
        )

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            from requests.adapters import HTTPAdapter
            from urllib3.util.retry import Retry

            o = self.options
            retry = Retry(
                total=o.n_retries, connect=o.n_retries, read=0, other=0, status=o.n_retries,
                status_forcelist=RETRIED_STATUSES, allowed_methods=None, backoff_factor=o.backoff_s,
                raise_on_status=False, respect_retry_after_header=False,
            )  # fmt: skip
            session = self._requests.Session()
            session.mount("http://", HTTPAdapter(max_retries=retry))
            session.mount("https://", HTTPAdapter(max_retries=retry))
            if o.api_key:
                session.headers["Authorization"] = f"Bearer {o.api_key}"
            self._local.session = session
        return session


def _status_message(base_url: str, path: str, status: int, text: str) -> str:
    hint = {
        401: "give its API key with --translator-api-key",
        403: "give its API key with --translator-api-key",
        404: "the URL must be the API's base, ending in /v1, and --translator-api-model a model it serves",
        400: "the request was refused (a prompt longer than its context? raise its --ctx-size)",
    }.get(status, "see the server's log")
    return f"the translation server at {base_url} answered {path} with HTTP {status}: {text[:200]!r}; {hint}"


def parse_completion(answer: dict[str, Any], base_url: str) -> Completion:
    """The first choice of a /completions answer, in llama-server's form of log-probs
    (`logprobs.content[i]` with `id`, `bytes`, `logprob`) or OpenAI's (`logprobs.tokens`,
    `logprobs.token_logprobs`, as vLLM and SGLang send them)."""
    try:
        choice = answer["choices"][0]
        logprobs = choice.get("logprobs") or {}
        usage = answer.get("usage") or {}
        n_prompt = int(usage.get("prompt_tokens") or 0)
        n_cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
        if "content" in logprobs:
            raw = [(entry.get("id"), _entry_bytes(entry), float(entry["logprob"])) for entry in logprobs["content"]]
        elif "tokens" in logprobs:
            raw = [(None, _openai_token_bytes(t), float(lp)) for t, lp in zip(logprobs["tokens"], logprobs["token_logprobs"])]
        elif not choice.get("text"):
            raw = []
        else:
            raise KeyError("logprobs")
        stopped = choice.get("finish_reason") == "stop"
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise TranslatorUnavailableError(
            f"the translation server at {base_url} sent a completion without the token log-probs streamst needs "
            f"({type(e).__name__}: {e}); use llama-server, vLLM or SGLang, whose /completions return them"
        ) from e
    return Completion(_token_steps(raw), stopped, n_prompt, min(n_cached, n_prompt))


def _entry_bytes(entry: dict[str, Any]) -> bytes:
    if entry.get("bytes") is not None:
        return bytes(entry["bytes"])
    return str(entry.get("token", "")).encode("utf-8")


def _openai_token_bytes(token: str) -> bytes:
    """A token of OpenAI's `logprobs.tokens`; vLLM writes a token that is not whole UTF-8 as
    'bytes:\\xe5\\x8c'."""
    if token.startswith("bytes:"):
        try:
            return ast.literal_eval(f"b'{token[len('bytes:'):]}'")
        except (ValueError, SyntaxError):
            return b""
    return token.encode("utf-8")


def _token_steps(raw: Sequence[tuple[int | None, bytes, float]]) -> tuple[TokenStep, ...]:
    """Tokens as steps; a character split across tokens is held back to the token that completes
    it; stop strings at the end (some servers list the end token) are dropped."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    steps: list[TokenStep] = []
    for token_id, data, logprob in raw:
        if data.decode("utf-8", "ignore") in STOP_STRINGS:
            break
        stand_in = zlib.crc32(data) if token_id is None else int(token_id)
        steps.append(TokenStep(stand_in, decoder.decode(data), logprob))
    return tuple(flush_pending(steps, decoder))


def cut_loop(steps: Sequence[TokenStep]) -> tuple[tuple[TokenStep, ...], bool]:
    """The steps up to where they start repeating themselves (`decoding.repeated_tail`), and
    whether a loop was cut."""
    ids: list[int] = []
    for i, step in enumerate(steps):
        ids.append(step.token_id)
        n_repeated = repeated_tail(ids)
        if n_repeated:
            log.info("translation fell into a loop after %d tokens; %d repeated tokens dropped", i + 1, n_repeated)
            return tuple(steps[: i + 1 - n_repeated]), True
    return tuple(steps), False
