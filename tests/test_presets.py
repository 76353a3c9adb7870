"""Which decoders translate: `--translator` (one decoder), else `--quality`, else the tool's
default preset (`balanced` for `streamst translate` and the benchmarks, `fast` for the server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import sacrebleu

from streamst import registry
from streamst.errors import OptionsError
from streamst.languages import resolve
from streamst.presets import DEFAULT_QUALITY, QUALITY_PRESETS, SERVER_QUALITY, Decoders, decoders
from streamst.writing import wrong_script_letters

SMALL, LARGE = QUALITY_PRESETS["fast"].steps, QUALITY_PRESETS["best"].steps
# en-000 into Chinese, direct, balanced: chrF 29.3 here (a sentence translated, names and numbers
# kept); a translation that lost the sentence or copied the English scores far below.
CHRF_AT_LEAST = 20.0


def test_presets_step_with_one_decoder_and_finish_with_another() -> None:
    assert QUALITY_PRESETS["fast"] == Decoders(SMALL, SMALL)
    assert QUALITY_PRESETS["balanced"] == Decoders(steps=SMALL, finals=LARGE)
    assert QUALITY_PRESETS["best"] == Decoders(LARGE, LARGE)
    assert decoders(None, None) == QUALITY_PRESETS[DEFAULT_QUALITY] == QUALITY_PRESETS["balanced"]
    assert decoders(None, None, SERVER_QUALITY) == QUALITY_PRESETS["fast"]
    assert decoders(None, "best", SERVER_QUALITY) == Decoders(LARGE, LARGE), "a preset given wins over the default"
    assert decoders(SMALL, "best") == Decoders(SMALL, SMALL), "--translator names one decoder for both"


def test_a_decoder_that_is_not_a_translator_is_refused_with_the_choices() -> None:
    with pytest.raises(OptionsError, match="not a translator model; choose one of: .*qwen2.5-coder-0.5b"):
        decoders("whisper-base", None)
    with pytest.raises(OptionsError, match="unknown quality preset 'great'; choose one of: balanced, best, fast"):
        decoders(None, "great")


def test_the_default_setup_pulls_every_decoder_of_every_preset() -> None:
    pulled_by_default = set(registry.resolve_names(["default"]))
    for preset in QUALITY_PRESETS.values():
        for model in (preset.steps, preset.finals):
            assert registry.get_manifest(model).role == "translator"
            assert model in pulled_by_default, f"{model} is in a preset but `streamst models pull default` skips it"


@pytest.mark.models
def test_by_default_the_direct_mode_steps_with_the_small_decoder_and_finishes_with_the_large(fleurs) -> None:
    if registry.pull_state(LARGE) != "pulled":
        pytest.skip(f"{LARGE} is not pulled; run: streamst models pull default")
    clip = fleurs["fleurs-en-000"]
    result = subprocess.run(
        [sys.executable, "-m", "streamst", "-v", "translate", str(clip["path"]), "-s", "en", "-t", "zh",
         "--mode", "direct", "--format", "jsonl"],
        capture_output=True, text=True, env=dict(os.environ),
        timeout=120 + 20 * clip["duration_s"],  # loading, then a generous multiple of the audio, cores busy or not
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"loading translator {SMALL}" in result.stderr
    assert f"finals are written by {LARGE}" in result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert any(e["kind"] == "partial" and e["committed_delta"] for e in events), "nothing committed while speaking"
    finals = [e for e in events if e["kind"] == "final"]
    text = "".join(f["committed_text"] for f in finals if f["source_text"])
    assert sacrebleu.sentence_chrf(text, [clip["references"]["zh"]]).score >= CHRF_AT_LEAST, text
    source = " ".join(f["source_text"] for f in finals)
    assert wrong_script_letters(text, source, resolve("zh"))[0] == 0, text
