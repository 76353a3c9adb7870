"""Shared fixtures: the evaluation data beside the repo, and one engine with the real models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FLEURS = SHARED_DATA / "fleurs-mini"


def fleurs_clips() -> list[dict]:
    manifest = FLEURS / "manifest.jsonl"
    if not manifest.exists():
        return []
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def fleurs() -> dict[str, dict]:
    """FLEURS-mini clips by id; skips when ../shared/data is not beside the repo."""
    clips = fleurs_clips()
    if not clips:
        pytest.skip(f"evaluation data not found at {FLEURS} (it lives in ../shared/data beside the repo)")
    return {clip["id"]: clip | {"path": FLEURS / clip["audio"]} for clip in clips}


@pytest.fixture(scope="session")
def engine():
    """The engine with the real default models (pulled by scripts/setup.sh)."""
    from streamst.engine import Engine

    engine = Engine()
    engine.load()
    return engine
