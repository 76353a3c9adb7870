"""The greedy loop every translator backend shares, over a scripted byte-level backend: no weights,
milliseconds. Stop tokens, the cap, UTF-8 hold-back, the loop guard, canonical prefill, stream
prefix reuse, drafts from a stream's last answer, and stream keys that keep nothing alive."""

from __future__ import annotations

import gc
import string
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from streamst.languages import Language, resolve
from streamst.translators.greedy import DecoderBackend, GreedyTranslator
from streamst.translators.prompt import PromptStyle, chat_prompt

EN, DE, ZH = resolve("en"), resolve("de"), resolve("zh")
N_BYTES = 256
STOP = N_BYTES  # the one token that is not a byte
N_VOCAB = N_BYTES + 1
ANSWER_MARK = b"assistant\n"  # the prompt's tail ends with it (then the committed target)
STOP_LOGIT = 10.0
OFF_SCRIPT = ord("~")  # what the scripted model says after text its answer does not have

Script = Callable[[bytes, list[int]], bytes]  # (prompt bytes, batch starts in the prompt) → answer


@dataclass(frozen=True)
class Options:
    n_ctx: int = 2048
    min_new_tokens_cap: int = 64
    new_tokens_per_source_token: float = 2.5
    style: PromptStyle = field(default_factory=PromptStyle)


class ScriptedBackend(DecoderBackend):
    """One token per UTF-8 byte, plus STOP. It "answers" `script(prompt, batch_starts)` then stops,
    so like a real model its output may depend on how the prompt was split into batches."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.cache: list[int] = []
        self.batch_starts: list[int] = []  # cache positions where an evaluate began
        self.batches: list[list[int]] = []  # every evaluate, in order

    @property
    def stop_ids(self) -> frozenset[int]:
        return frozenset({STOP})

    def tokenize(self, text: str, special: bool) -> list[int]:
        return list(text.encode("utf-8"))

    def cached_tokens(self) -> Sequence[int]:
        return self.cache

    def keep(self, n_tokens: int) -> None:
        assert 0 <= n_tokens <= len(self.cache)
        del self.cache[n_tokens:]
        self.batch_starts = [start for start in self.batch_starts if start < n_tokens]

    def evaluate(self, token_ids: Sequence[int]) -> None:
        assert token_ids, "an evaluate needs at least one token"
        self.batch_starts.append(len(self.cache))
        self.cache.extend(token_ids)
        self.batches.append(list(token_ids))

    def evaluate_all(self, token_ids: Sequence[int]) -> np.ndarray:
        self.evaluate(token_ids)  # one batch, as llama.cpp does it
        n_before = len(self.cache) - len(token_ids)
        return np.stack([self._logits_after(self.cache[: n_before + i + 1]) for i in range(len(token_ids))])

    def last_logits(self) -> np.ndarray:
        return self._logits_after(self.cache)

    def _logits_after(self, cache: list[int]) -> np.ndarray:
        context = bytes(t for t in cache if t < N_BYTES)
        n_prompt = context.rindex(ANSWER_MARK) + len(ANSWER_MARK)
        answer = self.script(context[:n_prompt], [s for s in self.batch_starts if s < n_prompt])
        written = context[n_prompt:]
        logits = np.zeros(N_VOCAB, dtype=np.float32)
        if not answer.startswith(written):  # a draft token the answer does not have: any choice
            logits[OFF_SCRIPT] = STOP_LOGIT
        else:
            logits[answer[len(written)] if len(written) < len(answer) else STOP] = STOP_LOGIT
        return logits

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id])


def says(answer: str) -> Script:
    return lambda prompt, batch_starts: answer.encode("utf-8")


def translator(script: Script, **options: object) -> tuple[GreedyTranslator, ScriptedBackend]:
    backend = ScriptedBackend(script)
    return GreedyTranslator(backend, Options(**options)), backend  # type: ignore[arg-type]


def n_head_tokens(source: Language = EN, target: Language = DE) -> int:
    return len(chat_prompt("", source, target).head.encode("utf-8"))


def test_a_stop_token_ends_a_finished_translation() -> None:
    t, _ = translator(says("Guten Morgen"))
    result = t.translate("Good morning", EN, DE)
    assert result.finished and result.text == "Guten Morgen"
    assert result.text == "".join(step.text for step in result.tokens)
    assert all(step.logprob < 0.0 for step in result.tokens)
    expected_logprob = STOP_LOGIT - np.log(np.exp(STOP_LOGIT) + N_VOCAB - 1)
    assert result.tokens[0].logprob == pytest.approx(expected_logprob, abs=1e-6)  # float32


def test_the_cap_ends_an_unfinished_translation() -> None:
    t, _ = translator(says("Guten Morgen"))
    result = t.translate("Good morning", EN, DE, max_new_tokens=5)
    assert not result.finished and result.text == "Guten"
    assert len(t.translate("Good morning", EN, DE, max_new_tokens=12).tokens) == 12


def test_the_default_cap_grows_with_the_source() -> None:
    t, _ = translator(says(string.ascii_letters * 4), min_new_tokens_cap=8, new_tokens_per_source_token=0.5)
    assert len(t.translate("ab", EN, DE).tokens) == 8
    assert len(t.translate("a" * 40, EN, DE).tokens) == 20


def test_a_split_character_is_held_back_and_appears_whole() -> None:
    t, _ = translator(says("龍 ok"))  # 龍 is three byte tokens
    result = t.translate("dragon", EN, ZH)
    assert [step.text for step in result.tokens] == ["", "", "龍", " ", "o", "k"]
    assert result.text == "龍 ok" and result.finished


def test_a_character_cut_by_the_cap_is_flushed_into_the_last_step() -> None:
    t, _ = translator(says("a龍"))
    result = t.translate("dragon", EN, ZH, max_new_tokens=3)
    assert [step.text for step in result.tokens] == ["a", "", "\ufffd"]
    assert result.text == "a\ufffd" and not result.finished


@pytest.mark.parametrize(("answer", "n_expected"), [("7" * 40, 12), ("ab" * 20, 12), ("Ja, " + "nein" * 10, 16)])
def test_a_loop_is_cut(answer: str, n_expected: int) -> None:
    t, _ = translator(says(answer))
    result = t.translate("Yes, no, no, no", EN, DE)
    assert not result.finished and len(result.tokens) == n_expected
    assert result.text == answer[:n_expected]


def test_committed_text_is_continued_not_repeated() -> None:
    t, backend = translator(says("Guten Morgen"))
    result = t.translate("Good morning", EN, DE, committed="Guten ")
    assert result.text == "Morgen" and result.finished
    assert bytes(backend.batches[1]).endswith(b"assistant\nGuten ")


def reveals_batches(prompt: bytes, batch_starts: list[int]) -> bytes:
    """An answer that shows how the prompt was split into batches (as float rounding would)."""
    return str(batch_starts).encode()


def test_the_head_is_always_its_own_batch_whatever_the_cache_held() -> None:
    t, backend = translator(reveals_batches)
    n_head = n_head_tokens()
    canonical = f"[0, {n_head}]"
    first = t.translate("The museum opens at nine.", EN, DE)
    assert first.text == canonical and first.n_prefill_tokens == first.n_prompt_tokens
    assert backend.batches[0] == backend.tokenize(chat_prompt("", EN, DE).head, True)
    for earlier in ("The museum opens at nine and closes at five.", "The museum", "The museum opens at nine."):
        t.translate(earlier, EN, DE)  # shares a longer prefix with the next request than the head
        again = t.translate("The museum opens at nine.", EN, DE)
        assert again.text == canonical
        assert again.n_prefill_tokens == again.n_prompt_tokens - n_head, "the pair's head stays cached"
    t.translate("区块链", ZH, EN)  # another head
    after_other_pair = t.translate("The museum opens at nine.", EN, DE)
    assert after_other_pair.text == canonical
    assert after_other_pair.n_prefill_tokens == after_other_pair.n_prompt_tokens


def test_a_stream_reuses_only_its_own_growing_source() -> None:
    t, _ = translator(reveals_batches)
    n_head, grown_source = n_head_tokens(), "The museum opens at nine."
    t.translate("The museum opens", EN, DE, stream_key=7)
    grown = t.translate(grown_source, EN, DE, stream_key=7)
    n_shared = n_head + len("The museum opens")
    assert grown.n_prefill_tokens == grown.n_prompt_tokens - n_shared
    assert grown.text == f"[0, {n_head}, {n_shared}]"
    t.translate("The museum opens", EN, DE, stream_key=7)
    other_stream = t.translate(grown_source, EN, DE, stream_key=8)
    assert other_stream.text == f"[0, {n_head}]"
    assert other_stream.n_prefill_tokens == other_stream.n_prompt_tokens - n_head
    no_key = t.translate(grown_source, EN, DE)
    assert no_key.n_prefill_tokens == no_key.n_prompt_tokens - n_head


def test_an_identical_request_of_the_same_stream_still_evaluates_its_last_token() -> None:
    t, _ = translator(says("Ja."))
    t.translate("Yes.", EN, DE, stream_key="s1")
    again = t.translate("Yes.", EN, DE, stream_key="s1")
    assert again.n_prefill_tokens == 1 and again.text == "Ja." and again.finished


class Session:
    """Stands for a session object passed as its own key (as sessions once did)."""


def test_a_stream_key_object_is_not_kept_alive() -> None:
    t, _ = translator(says("Ja."))
    session = Session()
    gone = weakref.ref(session)
    t.translate("Yes.", EN, DE, stream_key=session)
    grown = t.translate("Yes, yes.", EN, DE, stream_key=session)
    assert grown.n_prefill_tokens == grown.n_prompt_tokens - n_head_tokens() - len("Yes"), "still its stream"
    del session, grown
    gc.collect()
    assert gone() is None, "the translator must not keep an ended session (and its audio) alive"
    result = t.translate("Yes, yes.", EN, DE, stream_key=Session())
    assert result.n_prefill_tokens == result.n_prompt_tokens - n_head_tokens(), "a new object is a new stream"


def test_a_streams_last_answer_is_its_next_requests_draft() -> None:
    t, backend = translator(says("Guten Morgen"))
    first = t.translate("Good", EN, DE, stream_key=3)
    assert first.n_draft_tokens == 0
    grown = t.translate("Good morning", EN, DE, stream_key=3)
    assert grown.text == "Guten Morgen" and grown.finished
    assert grown.n_draft_tokens == len("Guten Morgen"), "every token was checked in the draft's batch"
    n_evaluates = len(backend.batches)
    continued = t.translate("Good morning", EN, DE, committed="Guten ", stream_key=3)
    assert continued.text == "Morgen" and continued.n_draft_tokens == len("Morgen")
    assert len(backend.batches) - n_evaluates == 2, "the prompt's new tokens, then the draft; no token one by one"


def test_a_draft_is_kept_only_as_far_as_greedy_decoding_agrees() -> None:
    answers = iter([b"Guten Morgen", b"Guten Abend, Welt"])
    answer = next(answers)

    def script(prompt: bytes, batch_starts: list[int]) -> bytes:
        return answer

    t, backend = translator(script)
    t.translate("Good morning", EN, DE, stream_key=3)
    answer = next(answers)
    changed = t.translate("Good evening, world", EN, DE, stream_key=3)
    assert changed.text == "Guten Abend, Welt" and changed.finished
    assert changed.n_draft_tokens == len("Guten "), "the draft up to where the answers part"
    assert b"~" not in bytes(backend.cache), "the draft's rest left the cache"
    other = t.translate("Good evening, world", EN, DE, stream_key=4)
    assert other.text == "Guten Abend, Welt" and other.n_draft_tokens == 0, "another stream has its own drafts"
