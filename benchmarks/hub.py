"""FLEURS and CoVoST 2 from the Hugging Face Hub through the ``datasets`` library.

For users online: ``streamst-bench run --dataset hub:google/fleurs --pairs en-de``. The
library is imported on first use; without it, or offline, the loaders raise DatasetError
with the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from streamst.benchmarks.datasets import (
    HUB_COVOST2,
    HUB_FLEURS,
    DatasetError,
    Pair,
    ReferenceSegment,
    SpeechInstance,
)

from streamst.audio import resample
from streamst.languages import Language
from streamst.types import SAMPLE_RATE_HZ, SAMPLES_PER_MS

HUB_INSTALL_HINT = "pip install datasets (and be online to reach the Hugging Face Hub)"

FLEURS_CONFIGS: dict[str, str] = {
    "en": "en_us", "de": "de_de", "fr": "fr_fr", "es": "es_419", "zh": "cmn_hans_cn",
    "ja": "ja_jp", "ko": "ko_kr", "pt": "pt_br", "it": "it_it", "ru": "ru_ru",
    "ar": "ar_eg", "vi": "vi_vn", "th": "th_th", "id": "id_id", "yue": "yue_hant_hk",
}  # fmt: skip
"""streamst code → FLEURS configuration name."""

COVOST2_SOURCES_TO_EN = ("fr", "de", "es", "ca", "it", "ru", "zh", "pt", "fa", "et", "mn", "nl",
                         "tr", "ar", "sv", "lv", "sl", "ta", "ja", "id", "cy")  # fmt: skip
COVOST2_TARGETS_FROM_EN = ("de", "ca", "zh", "fa", "et", "mn", "tr", "ar", "sv", "lv", "sl",
                           "ta", "ja", "id", "cy")  # fmt: skip


def _import_datasets() -> Any:
    try:
        import datasets
    except ImportError as e:
        raise DatasetError(f"the hub loaders need the `datasets` library: {HUB_INSTALL_HINT}") from e
    return datasets


def load_hub(
    name: str, pair: Pair, split: str = "test", limit: int | None = None, covost_dir: str | Path | None = None
) -> list[SpeechInstance]:
    """FLEURS (``hub:google/fleurs``) or CoVoST 2 (``hub:facebook/covost2``) as instances.

    CoVoST 2 needs the Common Voice 4 audio already downloaded (``covost_dir``), as its
    dataset card says. Raises DatasetError, with the fix, when offline or not installed.
    """
    datasets = _import_datasets()
    try:
        if name == HUB_FLEURS:
            return _load_hub_fleurs(datasets, pair, split, limit)
        if name == HUB_COVOST2:
            return _load_hub_covost2(datasets, pair, split, limit, covost_dir)
    except DatasetError:
        raise
    except Exception as e:
        raise DatasetError(f"cannot load {name} {pair.name} ({type(e).__name__}: {e}); {HUB_INSTALL_HINT}") from e
    raise DatasetError(f"unknown hub dataset {name!r}; choose {HUB_FLEURS} or {HUB_COVOST2}")


PARQUET_REVISION = "refs/convert/parquet"
"""The Hub's Parquet export of a script-based dataset, which `datasets` 4 can read."""


def _script_kwargs(datasets: Any) -> dict[str, Any]:
    """FLEURS and CoVoST 2 ship loading scripts: `datasets` < 4 runs them when trusted;
    `datasets` 4 no longer runs scripts, so it reads the Hub's Parquet export instead."""
    major = int(str(datasets.__version__).split(".")[0])
    return {"trust_remote_code": True} if major < 4 else {"revision": PARQUET_REVISION}


def _fleurs_config(lang: Language) -> str:
    if lang.code not in FLEURS_CONFIGS:
        raise DatasetError(f"no FLEURS configuration known for {lang.name}; known: {', '.join(sorted(FLEURS_CONFIGS))}")
    return FLEURS_CONFIGS[lang.code]


def _hub_audio(example: Mapping[str, Any]) -> np.ndarray:
    audio = example["audio"]
    samples = np.asarray(audio["array"], dtype=np.float32)
    return resample(samples, int(audio["sampling_rate"]), SAMPLE_RATE_HZ)


def _hub_instance(
    instance_id: str, lang: str, audio: np.ndarray, source_text: str, references: dict[str, str]
) -> SpeechInstance:
    duration_ms = len(audio) / SAMPLES_PER_MS
    return SpeechInstance(
        id=instance_id,
        source_lang=lang,
        duration_ms=duration_ms,
        source_text=source_text,
        references=references,
        segments=(ReferenceSegment(0.0, duration_ms, source_text, references),),
        audio=audio,
    )


def _load_hub_fleurs(datasets: Any, pair: Pair, split: str, limit: int | None) -> list[SpeechInstance]:
    """FLEURS is n-way parallel: utterances with the same ``id`` read the same FLORES sentence."""
    source = datasets.load_dataset(
        "google/fleurs", _fleurs_config(pair.source), split=split, **_script_kwargs(datasets)
    )
    target = datasets.load_dataset(
        "google/fleurs", _fleurs_config(pair.target), split=split, **_script_kwargs(datasets)
    )
    target_text = {int(row["id"]): row["raw_transcription"] for row in target.remove_columns("audio")}
    instances: list[SpeechInstance] = []
    seen: set[int] = set()
    for example in source:
        sentence_id = int(example["id"])
        if sentence_id not in target_text or sentence_id in seen:
            continue
        seen.add(sentence_id)
        instances.append(
            _hub_instance(
                f"fleurs-{pair.source.code}-{sentence_id}",
                pair.source.code,
                _hub_audio(example),
                example["raw_transcription"],
                {pair.target.code: target_text[sentence_id]},
            )
        )
        if limit is not None and len(instances) >= limit:
            break
    return instances


def _load_hub_covost2(
    datasets: Any, pair: Pair, split: str, limit: int | None, covost_dir: str | Path | None
) -> list[SpeechInstance]:
    src, tgt = pair.source.code, pair.target.code
    supported = (tgt == "en" and src in COVOST2_SOURCES_TO_EN) or (src == "en" and tgt in COVOST2_TARGETS_FROM_EN)
    if not supported:
        raise DatasetError(
            f"unknown pair {pair.name} for CoVoST 2; it covers X-en for {', '.join(COVOST2_SOURCES_TO_EN)} "
            f"and en-X for {', '.join(COVOST2_TARGETS_FROM_EN)}"
        )
    if "revision" in _script_kwargs(datasets):
        raise DatasetError(
            "CoVoST 2 is read by its loading script, which datasets 4 no longer runs: pip install 'datasets<4'"
        )
    if covost_dir is None:
        raise DatasetError(
            "CoVoST 2 needs the Common Voice 4 audio on disk: download it and pass its folder as covost_dir"
        )
    rows = datasets.load_dataset(
        "facebook/covost2", f"{src}_{tgt}", data_dir=str(covost_dir), split=split, trust_remote_code=True
    )
    instances = []
    for example in rows:
        instances.append(
            _hub_instance(
                f"covost2-{pair.name}-{example['id']}",
                src,
                _hub_audio(example),
                example["sentence"],
                {tgt: example["translation"]},
            )
        )
        if limit is not None and len(instances) >= limit:
            break
    return instances
