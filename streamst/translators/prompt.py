"""Chat prompts for instruction-tuned decoders (ChatML, as Qwen uses).

A prompt comes in three parts so a backend can tokenise and cache them separately: the `head`
(system turn, earlier exchanges, instruction; fixed while a sentence is translated), the `source`
text (user text, never parsed for special tokens), and the `tail` (end of the user turn, start of
the assistant turn, and the committed target). A growing source therefore only appends to a
cached head + source.

Earlier exchanges are (source, translation) pairs shown as earlier user and assistant turns:
the sentences a talk said before (so its names and terms keep their translation), or examples.
Their text is user text too: the head is a sequence of pieces, each saying whether special-token
strings in it are tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from streamst.languages import Language

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"


@dataclass(frozen=True)
class PromptStyle:
    system: str = "You are a professional translator. You translate faithfully and fluently."
    instruction: str = (
        "Translate the following {source} text into {target}. "
        "Output only the {target} translation, with nothing else."
    )
    suppress_thinking: bool = False  # Qwen3: close an empty think block so it answers directly


@dataclass(frozen=True)
class PromptPiece:
    text: str
    special: bool  # special-token strings in `text` become special tokens (else they stay text)


@dataclass(frozen=True)
class PromptParts:
    head: tuple[PromptPiece, ...]  # system turn, earlier exchanges, the instruction
    source: str  # plain text: special-token strings in it stay text
    tail: str  # special tokens allowed; ends with the committed target

    @property
    def head_text(self) -> str:
        return "".join(piece.text for piece in self.head)


def chat_prompt(
    source_text: str,
    source: Language,
    target: Language,
    committed: str = "",
    style: PromptStyle = PromptStyle(),
    earlier: Sequence[tuple[str, str]] = (),
) -> PromptParts:
    """The prompt translating `source_text`, continuing `committed`; `earlier`: (source,
    translation) exchanges shown before it, oldest first."""
    instruction = style.instruction.format(source=source.name, target=target.name)
    think = "<think>\n\n</think>\n\n" if style.suppress_thinking else ""
    head = [PromptPiece(f"{IM_START}system\n{style.system}{IM_END}\n", True)]
    for earlier_source, earlier_target in earlier:
        head += [
            PromptPiece(f"{IM_START}user\n{instruction}\n\n", True),
            PromptPiece(earlier_source, False),
            PromptPiece(f"{IM_END}\n{IM_START}assistant\n{think}", True),
            PromptPiece(earlier_target, False),
            PromptPiece(f"{IM_END}\n", True),
        ]
    head.append(PromptPiece(f"{IM_START}user\n{instruction}\n\n", True))
    return PromptParts(
        head=tuple(head),
        source=source_text,
        tail=f"{IM_END}\n{IM_START}assistant\n{think}{committed}",
    )
