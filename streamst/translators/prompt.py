"""Chat prompts for instruction-tuned decoders (ChatML, as Qwen uses).

A prompt comes in three parts so a backend can tokenise and cache them separately: the `head`
(system turn and instruction; fixed per language pair), the `source` text (user text, never
parsed for special tokens), and the `tail` (end of the user turn, start of the assistant turn,
and the committed target). A growing source therefore only appends to a cached head + source."""

from __future__ import annotations

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
class PromptParts:
    head: str  # special tokens allowed
    source: str  # plain text: special-token strings in it stay text
    tail: str  # special tokens allowed; ends with the committed target


def chat_prompt(
    source_text: str, source: Language, target: Language, committed: str = "", style: PromptStyle = PromptStyle()
) -> PromptParts:
    instruction = style.instruction.format(source=source.name, target=target.name)
    think = "<think>\n\n</think>\n\n" if style.suppress_thinking else ""
    return PromptParts(
        head=f"{IM_START}system\n{style.system}{IM_END}\n{IM_START}user\n{instruction}\n\n",
        source=source_text,
        tail=f"{IM_END}\n{IM_START}assistant\n{think}{committed}",
    )
