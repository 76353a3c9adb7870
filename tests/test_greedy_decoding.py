"""The greedy loop every translator backend shares, over a scripted byte-level backend: no weights,
milliseconds. Stop tokens, the cap, UTF-8 hold-back, the loop guard, canonical prefill, stream
prefix reuse, stream keys that keep nothing alive, and a KV cache (slot) per stream."""

from __future__ import annotations

import gc
import string
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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

Script = Callable[[bytes, list[int]], bytes]  # (prompt bytes, batch starts in the prompt) → answer


@dataclass(frozen=True)
class Options:
    n_ctx: int = 2048
    min_new_tokens_cap: int = 64
    new_tokens_per_source_token: float = 2.5
    style: PromptStyle = field(default_factory=PromptStyle)
    target_fidelity: bool = True


class ScriptedBackend(DecoderBackend):
    """One token per UTF-8 byte, plus STOP, with `n_slots` caches. It "answers"
    `script(prompt, batch_starts)` then stops, so like a real model its output may depend on how
    the prompt was split into batches."""

    def __init__(self, script: Script, n_slots: int = 1, stop_second: bool = False) -> None:
        self.script = script
        self.stop_second = stop_second  # STOP is the second choice at every step (else all others tie at 0)
        self.caches: list[list[int]] = [[] for _ in range(n_slots)]
        self.batch_starts: list[list[int]] = [[] for _ in range(n_slots)]  # cache positions where an evaluate began
        self.batches: list[list[int]] = []  # every evaluate, in order

    @property
    def n_slots(self) -> int:
        return len(self.caches)

    @property
    def stop_ids(self) -> frozenset[int]:
        return frozenset({STOP})

    def tokenize(self, text: str, special: bool) -> list[int]:
        return list(text.encode("utf-8"))

    def cached_tokens(self, slot: int) -> Sequence[int]:
        return self.caches[slot]

    def keep(self, slot: int, n_tokens: int) -> None:
        assert 0 <= n_tokens <= len(self.caches[slot])
        del self.caches[slot][n_tokens:]
        self.batch_starts[slot] = [start for start in self.batch_starts[slot] if start < n_tokens]

    def evaluate(self, slot: int, token_ids: Sequence[int]) -> np.ndarray:
        assert token_ids, "an evaluate needs at least one token"
        cache = self.caches[slot]
        self.batch_starts[slot].append(len(cache))
        cache.extend(token_ids)
        self.batches.append(list(token_ids))
        logits = np.zeros(N_VOCAB, dtype=np.float32)
        logits[STOP] = 1.0 if self.stop_second else 0.0
        context = bytes(t for t in cache if t < N_BYTES)
        if ANSWER_MARK not in context:  # the prompt head alone: nothing to answer yet
            return logits
        n_prompt = context.rindex(ANSWER_MARK) + len(ANSWER_MARK)
        if b"<|im_end|>" in context[n_prompt:]:  # an earlier exchange's answer: this turn has not begun
            return logits
        answer = self.script(context[:n_prompt], [s for s in self.batch_starts[slot] if s < n_prompt])
        written = context[n_prompt:]
        assert answer.startswith(written), "the loop fed back exactly the tokens it chose"
        logits[answer[len(written)] if len(written) < len(answer) else STOP] = STOP_LOGIT
        return logits

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id])


def says(answer: str) -> Script:
    return lambda prompt, batch_starts: answer.encode("utf-8")


def translator(
    script: Script, n_slots: int = 1, stop_second: bool = False, **options: object
) -> tuple[GreedyTranslator, ScriptedBackend]:
    backend = ScriptedBackend(script, n_slots, stop_second)
    return GreedyTranslator(backend, Options(**options)), backend  # type: ignore[arg-type]


def n_head_tokens(source: Language = EN, target: Language = DE) -> int:
    return len(chat_prompt("", source, target).head_text.encode("utf-8"))


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
    t, _ = translator(says("龍 42"))  # 龍 is three byte tokens
    result = t.translate("dragon", EN, ZH)
    assert [step.text for step in result.tokens] == ["", "", "龍", " ", "4", "2"]
    assert result.text == "龍 42" and result.finished


def test_a_character_cut_by_the_cap_is_flushed_into_the_last_step() -> None:
    t, _ = translator(says("1龍"))
    result = t.translate("dragon", EN, ZH, max_new_tokens=3)
    assert [step.text for step in result.tokens] == ["1", "", "\ufffd"]
    assert result.text == "1\ufffd" and not result.finished


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        ("7" * 40, "7"),
        ("ab" * 20, "ab"),
        ("Ja, " + "nein" * 10, "Ja, nein"),
        ("so many people came " * 4, "so many people came "),  # a phrase repeated twice
    ],
)
def test_a_loop_is_cut_and_its_repeats_dropped(answer: str, kept: str) -> None:
    t, _ = translator(says(answer))
    result = t.translate("Yes, no, no, no", EN, DE)
    assert not result.finished and result.text == kept
    assert result.text == "".join(step.text for step in result.tokens)


def test_a_loop_that_repeats_the_committed_text_adds_nothing() -> None:
    t, _ = translator(says("so many people came " * 4))
    result = t.translate("So many people came.", EN, DE, committed="so many people came ")
    assert result.text == "" and not result.finished, "committing the repeat would grow the loop at every step"


def test_a_loop_of_characters_split_across_tokens_keeps_whole_characters() -> None:
    t, _ = translator(says("龍" * 14))  # three byte tokens each
    result = t.translate("dragons", EN, ZH)
    assert result.text == "龍" and "\ufffd" not in result.text


def test_a_translation_that_only_repeats_a_word_of_the_source_is_not_a_loop() -> None:
    t, _ = translator(says("Ja, ja. Nein, nein."))
    result = t.translate("Yes, yes. No, no.", EN, DE)
    assert result.finished and result.text == "Ja, ja. Nein, nein."


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
    assert backend.batches[0] == backend.tokenize(chat_prompt("", EN, DE).head_text, True)
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


# several streams ------------------------------------------------------------------------------------


def by_source(prompt: bytes, batch_starts: list[int]) -> bytes:
    """Answers the source backwards (its own for each request, and no copy of it)."""
    source = prompt.split(b"\n\n", 1)[1].split(b"<|im_end|>")[0]
    return source[::-1]


def test_a_stream_finds_its_own_prompt_cached_after_others_asked() -> None:
    t, _ = translator(by_source, n_slots=2)
    t.translate("the museum opens", EN, DE, stream_key=7)
    t.translate("bonjour", EN, DE, stream_key=8)  # another stream, another slot
    grown = t.translate("the museum opens at nine", EN, DE, stream_key=7)
    assert grown.text == "enin ta snepo muesum eht"
    assert grown.n_prefill_tokens == len(" at nine") + len(chat_prompt("", EN, DE).tail.encode())
    t.translate("hola", EN, DE, stream_key=9)  # a third stream takes the least recently used slot (8's)
    again = t.translate("bonjour tout le monde", EN, DE, stream_key=8)
    assert again.n_prefill_tokens == again.n_prompt_tokens - n_head_tokens(), "8's slot went to 9"


def test_a_slot_answers_the_same_whatever_the_other_slots_hold() -> None:
    alone, _ = translator(reveals_batches)
    shared, _ = translator(reveals_batches, n_slots=2)
    for i, text in enumerate(["The museum", "區塊鏈", "The museum opens", "The museum opens at", "Hola"]):
        shared.translate(text, EN, DE, stream_key=i % 2)  # the last slot used by 1 shares most with the next
    expected = alone.translate("The museum opens at nine.", EN, DE).text
    assert shared.translate("The museum opens at nine.", EN, DE, stream_key=5).text == expected


def test_more_requests_than_slots_all_get_their_answers() -> None:
    t, _ = translator(by_source, n_slots=2)
    texts = [f"request number {i}" for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda item: t.translate(item[1], EN, DE, stream_key=item[0] % 5), enumerate(texts)))
    assert [a.text for a in answers] == [text[::-1] for text in texts]


class FailingBackend(ScriptedBackend):
    def __init__(self, script: Script, fail_on_call: int) -> None:
        super().__init__(script)
        self.fail_on_call = fail_on_call

    def evaluate(self, slot: int, token_ids: Sequence[int]) -> np.ndarray:
        if len(self.batches) == self.fail_on_call:
            self.batches.append(list(token_ids))
            raise RuntimeError("the model failed")
        return super().evaluate(slot, token_ids)


def test_a_failed_evaluate_fails_its_request_and_the_next_request_is_served() -> None:
    backend = FailingBackend(says("Ja"), fail_on_call=3)  # head, rest of the prompt, a step, then this
    t = GreedyTranslator(backend, Options())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="the model failed"):
        t.translate("Yes", EN, DE, stream_key=1, max_new_tokens=8)
    after = t.translate("Yes", EN, DE, stream_key=1)
    assert after.text == "Ja" and after.n_prefill_tokens == after.n_prompt_tokens, "the slot started afresh"


def test_a_chinese_translation_never_writes_latin_words_the_source_has_no_name_for() -> None:
    # The scripted model wants to answer "Bob 42", with stopping as its second choice.
    t, _ = translator(says("Bob 42"), stop_second=True)
    assert t.translate("Hello Bob", EN, ZH).text == "Bob 42", "a name of the source may stay"
    assert t.translate("hello bob", EN, DE).text == "Bob 42", "a Latin-script target is left alone"
    masked_out = t.translate("hello bob", EN, ZH)
    assert masked_out.text == "" and masked_out.finished, "'B' is masked, so the second choice (stop) wins"
    t, _ = translator(says("Bob 42"), stop_second=True, target_fidelity=False)
    assert t.translate("hello bob", EN, ZH).text == "Bob 42", "no mask without target fidelity"


def test_prepare_does_the_first_requests_one_off_work_and_leaves_no_trace() -> None:
    prepared, backend = translator(says("Bob 42"), stop_second=True)
    prepared.prepare()
    assert len(backend.batches) == 1 and all(not cache for cache in backend.caches), "one evaluation, then emptied"
    calls: list[int] = []
    byte_of = backend.token_bytes
    backend.token_bytes = lambda token_id: calls.append(token_id) or byte_of(token_id)  # type: ignore[method-assign]
    fresh, _ = translator(says("Bob 42"), stop_second=True)
    for source, target in (("hello Bob", ZH), ("hello bob", ZH), ("Hello", DE)):
        assert prepared.translate(source, EN, target) == fresh.translate(source, EN, target)
    assert len(calls) < N_BYTES, "the script masks were built by prepare, not by the requests"


class RetryBackend(ScriptedBackend):
    """Answers `answers[k]` on its k-th attempt: an attempt ends when a decoded answer is dropped
    from the cache (the translator decoding again from the prompt)."""

    def __init__(self, answers: Sequence[str]) -> None:
        super().__init__(self.answer, stop_second=True)
        self.answers = [a.encode("utf-8") for a in answers]
        self.attempt = 0

    def answer(self, prompt: bytes, batch_starts: list[int]) -> bytes:
        return self.answers[min(self.attempt, len(self.answers) - 1)]

    def keep(self, slot: int, n_tokens: int) -> None:
        context = bytes(t for t in self.caches[slot] if t < N_BYTES)
        if ANSWER_MARK in context and n_tokens < len(self.caches[slot]):
            self.attempt += 1
        super().keep(slot, n_tokens)


def test_a_translation_that_copies_its_latin_source_is_decoded_again_without_the_copied_words() -> None:
    # Byte tokens: the retry bans the copied words' first tokens after a space, here the space, so
    # the second answer has none; it starts as the first did (the prompt's logits are the same).
    backend = RetryBackend(["Im the farmers dry their corn", "Im-Mai-mahlen-Bauern-Korn"])
    t = GreedyTranslator(backend, Options())  # type: ignore[arg-type]
    result = t.translate("the farmers dry their corn", EN, DE)
    assert backend.attempt == 1 and result.text == "Im-Mai-mahlen-Bauern-Korn" and result.finished


def test_a_translation_that_copies_its_source_again_is_not_committed() -> None:
    # Words of one or two letters are not banned, so the retry gives the same copy.
    backend = RetryBackend(["we go to an ox"])
    t = GreedyTranslator(backend, Options())  # type: ignore[arg-type]
    result = t.translate("we go to an ox", EN, DE)
    assert backend.attempt == 1 and result.text == "" and result.tokens == () and not result.finished


def test_a_translation_that_comments_on_itself_is_decoded_again_without_the_words_of_the_comment() -> None:
    # Byte tokens: the retry bans the first token of " German", " translates", …: the space; it
    # starts as the first did (the prompt's logits are the same). A retry that comments again is
    # cut: tests/test_openai_server_translator.py, whose server can answer anything.
    comment = 'It helps. The German text "Es hilft" translates to English as: It helps.'
    backend = RetryBackend([comment, "It-helps."])
    t = GreedyTranslator(backend, Options())  # type: ignore[arg-type]
    result = t.translate("Es hilft.", resolve("de"), EN)
    assert backend.attempt == 1 and result.text == "It-helps." and result.finished


def test_names_a_translation_shares_with_its_source_are_no_copy() -> None:
    t, _ = translator(says("Dr Ehud Ur, Dalhousie University in Halifax"))
    source = "Dr Ehud Ur, Dalhousie University in Halifax"
    assert t.translate(source, EN, DE).text == source


def test_earlier_exchanges_are_turns_before_the_source_and_their_text_stays_text() -> None:
    parts = chat_prompt("Now.", EN, DE, earlier=[("Before <|im_end|>.", "Vorher.")])
    assert [(p.text, p.special) for p in parts.head if not p.special] == [("Before <|im_end|>.", False), ("Vorher.", False)]
    text = parts.head_text
    assert text.startswith(chat_prompt("", EN, DE).head[0].text)
    assert text.endswith(chat_prompt("", EN, DE).head[-1].text), "the instruction of this turn comes last"
    assert text.index("Before") < text.index("assistant") < text.index("Vorher.")
    assert chat_prompt("Now.", EN, DE, earlier=()).head_text == chat_prompt("Now.", EN, DE).head_text


def test_a_stream_keeps_its_earlier_exchanges_cached_while_its_source_grows() -> None:
    t, backend = translator(says("Jetzt"))
    earlier = (("It rained.", "Es regnete."),)
    first = t.translate("Now it", EN, DE, stream_key=1, earlier=earlier)
    assert first.n_prefill_tokens == first.n_prompt_tokens
    assert backend.batches[0] == backend.tokenize(chat_prompt("", EN, DE, earlier=earlier).head_text, True)
    grown = t.translate("Now it is dry", EN, DE, stream_key=1, earlier=earlier)
    assert grown.n_prefill_tokens == len(" is dry") + len(chat_prompt("", EN, DE).tail.encode())
    moved_on = t.translate("Then", EN, DE, stream_key=1, earlier=(("Now it is dry.", "Jetzt ist es trocken."),))
    assert moved_on.n_prefill_tokens == moved_on.n_prompt_tokens, "another head is evaluated afresh, as its own batch"
