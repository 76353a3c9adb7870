"""Chat prompts for instruction-tuned decoders (ChatML, as Qwen uses).

The layout keeps everything that does not depend on the source text first, and the source text
last in the user turn, so a growing source only appends to the cached prompt prefix; the
committed target is a prefilled start of the assistant turn."""

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


def chat_prompt(
    source_text: str, source: Language, target: Language, committed: str = "", style: PromptStyle = PromptStyle()
) -> str:
    instruction = style.instruction.format(source=source.name, target=target.name)
    think = "<think>\n\n</think>\n\n" if style.suppress_thinking else ""
    return (
        f"{IM_START}system\n{style.system}{IM_END}\n"
        f"{IM_START}user\n{instruction}\n\n{source_text}{IM_END}\n"
        f"{IM_START}assistant\n{think}{committed}"
    )
