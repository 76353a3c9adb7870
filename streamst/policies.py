"""Simultaneous policies: given the source so far and the decoder's proposal, READ or WRITE.

A policy is pure: `decide(state)` looks only at the explicit `PolicyState` and returns `Read()` or
`Write(text)`, where `text` is a prefix of the proposal's continuation. The session asks the
policy what proposal it needs (`request`) before calling the translator, so the decoder never
produces more than the policy can use. Committed target text is never retracted; every policy
commits whole target units (words, or characters for zh/ja/ko/yue) and, while the segment is
still open, never a sentence-final mark the source has not said yet. The session, not the policy,
flushes a sentence when it ends.

Each policy declares its latency `knob` (name, type, range, default, sweep values, help); a new
policy is one decision class here and one entry in `streamst.options`."""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

from streamst.knobs import Knob
from streamst.punctuation import SENTENCE_END
from streamst.types import TokenStep

_WORD = re.compile(r"\s*\S+")


@dataclass(frozen=True)
class Proposal:
    """The decoder's continuation after the committed target."""

    tokens: tuple[TokenStep, ...]
    finished: bool  # the decoder ended the translation (not cut by a token cap)

    @property
    def text(self) -> str:
        return "".join(t.text for t in self.tokens)


@dataclass(frozen=True)
class ProposalRequest:
    """What the session should ask the translator for."""

    source: Literal["stable", "all"]  # translate the stable source only, or stable + tentative
    max_new_tokens: int | None  # None: let the translator choose; 0: nothing to ask, READ


@dataclass(frozen=True)
class PolicyState:
    n_stable_words: int  # committed source words in this segment
    stable_source: str  # their text
    tentative_source: str  # the latest hypothesis after them
    committed_target: str  # target text already committed in this segment
    proposal: Proposal  # the decoder's continuation after `committed_target`
    history: tuple[str, ...]  # earlier full targets (committed + proposal) of other source texts, oldest first
    target_unit: Literal["word", "char"]


@dataclass(frozen=True)
class Read:
    """Wait for more source."""


@dataclass(frozen=True)
class Write:
    text: str  # appended to the committed target


Action = Read | Write


class Policy(ABC):
    name: ClassVar[str]
    knob: ClassVar[Knob]  # the latency knob: a dataclass field of the same name holds its value

    def __post_init__(self) -> None:
        self.knob.parse(self.knob_value)

    @property
    def knob_value(self) -> float:
        return getattr(self, self.knob.name)

    @classmethod
    def with_knob(cls, value: float | None = None) -> Policy:
        """The policy with its knob at `value` (checked), or at the knob's default for None."""
        return cls(**{cls.knob.name: cls.knob.parse(cls.knob.default if value is None else value)})

    @abstractmethod
    def request(self, n_stable_words: int, n_committed_units: int, unit: Literal["word", "char"]) -> ProposalRequest:
        """The proposal this policy needs at this step."""

    @abstractmethod
    def choose(self, state: PolicyState) -> int:
        """How many units of the proposal to commit while the segment is open (0 = READ)."""

    def decide(self, state: PolicyState) -> Action:
        n_units = self.choose(state)
        # A proposal cut by its token cap may not have finished its last unit.
        complete = count_units(state.proposal.text, state.target_unit) - (0 if state.proposal.finished else 1)
        n_units = min(n_units, complete)
        text = _guard(prefix_units(state.proposal.text, n_units, state.target_unit), state)
        return Write(text) if text.strip() else Read()


UNITS_PER_SOURCE_WORD = {"word": 1.0, "char": 1.5}  # target length per source word, typical
TOKENS_PER_UNIT = {"word": 2.0, "char": 1.0}  # decoder tokens per target unit, generous


@dataclass(frozen=True)
class WaitK(Policy):
    """wait-k (Ma et al. 2019) on stable source words: the target trails the source by k words.

    With n stable source words, up to (n - k) · r target units may be committed, r being the
    typical target units per source word (`UNITS_PER_SOURCE_WORD`). The decoder is asked only
    for the units that may be committed next, and not at all when there are none."""

    k: int = 3
    name = "wait-k"
    knob = Knob("k", int, default=3, sweep=(1, 2, 3, 5), minimum=0,
                help="target words trail the stable source by k words")

    def allowed_units(self, n_stable_words: int, unit: Literal["word", "char"]) -> int:
        return max(0, math.floor((n_stable_words - self.k) * UNITS_PER_SOURCE_WORD[unit]))

    def request(self, n_stable_words: int, n_committed_units: int, unit: Literal["word", "char"]) -> ProposalRequest:
        wanted = self.allowed_units(n_stable_words, unit) - n_committed_units
        # One unit more than may be committed shows where the last committable one ends.
        return ProposalRequest("stable", math.ceil((wanted + 1) * TOKENS_PER_UNIT[unit]) if wanted > 0 else 0)

    def choose(self, state: PolicyState) -> int:
        allowed = self.allowed_units(state.n_stable_words, state.target_unit)
        return max(0, allowed - count_units(state.committed_target, state.target_unit))


@dataclass(frozen=True)
class TargetAgreement(Policy):
    """LocalAgreement on the target (Polák et al. 2022): translate the whole source so far at
    every step and commit the prefix that the last n full targets agree on, each a translation of
    a different source text (a source that did not change gives the same translation again, so it
    is no evidence: "by 25 to" heard twice must not commit "25到年")."""

    n: int = 2
    lookahead_tokens: int = 16  # the most tokens decoded per step; agreement grows step by step
    name = "la"
    knob = Knob("n", int, default=2, sweep=(2, 3, 4, 5), minimum=2,
                help="commit the prefix the last n translations of the source so far agree on")

    def request(self, n_stable_words: int, n_committed_units: int, unit: Literal["word", "char"]) -> ProposalRequest:
        return ProposalRequest("all", self.lookahead_tokens)

    def choose(self, state: PolicyState) -> int:
        if len(state.history) < self.n - 1:
            return 0
        targets = [*state.history[-(self.n - 1) :], state.committed_target + state.proposal.text]
        unit_lists = [split_units(t, state.target_unit) for t in targets]
        agreed = 0
        for column in zip(*unit_lists):
            if len({u.strip() for u in column}) != 1:
                break
            agreed += 1
        return max(0, agreed - count_units(state.committed_target, state.target_unit))


@dataclass(frozen=True)
class Confidence(Policy):
    """Commit proposal tokens of the stable source while each one's probability stays >= tau."""

    tau: float = 0.6
    lookahead_tokens: int = 12  # the most tokens decoded per step
    name = "confidence"
    knob = Knob("tau", float, default=0.6, sweep=(0.3, 0.5, 0.7, 0.9), minimum=0.0, maximum=1.0, exclusive=True,
                help="commit proposal tokens of the stable source while their probability stays >= tau")

    def request(self, n_stable_words: int, n_committed_units: int, unit: Literal["word", "char"]) -> ProposalRequest:
        return ProposalRequest("stable", self.lookahead_tokens)

    def choose(self, state: PolicyState) -> int:
        floor = math.log(self.tau)
        confident = ""
        for token in state.proposal.tokens:
            if token.logprob < floor:
                break
            confident += token.text
        # A unit counts only if the confident run reaches its end.
        n, length = 0, 0
        for unit in split_units(state.proposal.text, state.target_unit):
            length += len(unit)
            if length > len(confident):
                break
            n += 1
        return n


# units -------------------------------------------------------------------------------------------


def split_units(text: str, unit: Literal["word", "char"]) -> list[str]:
    """Pieces that concatenate back to `text`: words with their leading space, or characters
    (a space stays attached to the character after it)."""
    if unit == "word":
        pieces = _WORD.findall(text)
    else:
        pieces = re.findall(r"\s*\S", text)
    consumed = sum(len(p) for p in pieces)
    if pieces and consumed < len(text):
        pieces[-1] += text[consumed:]
    return pieces


def count_units(text: str, unit: Literal["word", "char"]) -> int:
    return len(split_units(text, unit))


def prefix_units(text: str, n_units: int, unit: Literal["word", "char"]) -> str:
    return "".join(split_units(text, unit)[: max(0, n_units)])


def _guard(text: str, state: PolicyState) -> str:
    """While the segment is open, do not end a sentence the source has not ended."""
    source_ended = state.stable_source.rstrip().endswith(tuple(SENTENCE_END))
    if source_ended:
        return text
    stripped = text.rstrip()
    while stripped and stripped[-1] in SENTENCE_END:
        stripped = stripped[:-1].rstrip()
    return stripped if stripped != text.rstrip() else text
