"""Which decoder translates: `--translator`, else `--quality`, else (in `streamst translate`) the
mode's default (the 0.5B decoder for the direct mode, the 1.5B one for the cascade)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import sacrebleu

from streamst import registry
from streamst.languages import resolve
from streamst.options import MODES
from streamst.presets import DEFAULT_QUALITY, DEFAULT_QUALITY_BY_MODE, QUALITY_PRESETS, translator_model
from streamst.writing import wrong_script_letters

FAST, BEST = QUALITY_PRESETS["fast"], QUALITY_PRESETS["best"]


def test_the_mode_chooses_the_decoder_where_no_preset_is_given() -> None:
    assert translator_model(None, None, "direct") == FAST
    assert translator_model(None, None, "cascade") == BEST
    assert translator_model(None, None) == QUALITY_PRESETS[DEFAULT_QUALITY] == FAST
    assert translator_model(None, "fast", "cascade") == FAST, "a preset given wins over the mode"
    assert translator_model(None, "best", "direct") == BEST
    assert translator_model(FAST, "best", "cascade") == FAST, "--translator wins over both"


def test_every_mode_has_a_default_decoder_and_the_default_setup_pulls_them() -> None:
    assert set(DEFAULT_QUALITY_BY_MODE) == set(MODES)
    pulled_by_default = set(registry.resolve_names(["default"]))
    for quality in DEFAULT_QUALITY_BY_MODE.values():
        model = QUALITY_PRESETS[quality]
        assert registry.get_manifest(model).role == "translator"
        assert model in pulled_by_default, f"{model} is a default but `streamst models pull default` skips it"


@pytest.mark.models
def test_the_cascade_translates_with_the_larger_decoder_by_default(fleurs) -> None:
    if registry.pull_state(BEST) != "pulled":
        pytest.skip(f"{BEST} is not pulled; run: streamst models pull default")
    clip = fleurs["fleurs-en-000"]
    result = subprocess.run(
        [sys.executable, "-m", "streamst", "-v", "translate", str(clip["path"]), "-s", "en", "-t", "zh",
         "--mode", "cascade", "--format", "jsonl"],
        capture_output=True, text=True, env=dict(os.environ),
        timeout=120 + 20 * clip["duration_s"],  # loading, then a generous multiple of the audio, cores busy or not
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"loading translator {BEST}" in result.stderr
    assert f"loading translator {FAST}" not in result.stderr
    finals = [event for event in map(json.loads, result.stdout.splitlines()) if event["kind"] == "final"]
    text = "".join(f["committed_text"] for f in finals if f["source_text"])
    assert sacrebleu.sentence_chrf(text, [clip["references"]["zh"]]).score >= 25.0, text
    source = " ".join(f["source_text"] for f in finals)
    assert wrong_script_letters(text, source, resolve("zh"))[0] == 0, text
