"""Markdown tables of benchmark scores: ``report.md`` per output folder, and ``RESULTS.md``."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from streamst.benchmarks.mt import MTScores
from streamst.benchmarks.results import BenchResults, Meta
from streamst.benchmarks.scoring import RunScores, pooled_retention

MS_PER_S = 1000
SIMULEVAL_RESCORE = (
    "simuleval --score-only --output DIR --eval-latency-unit word|char "
    "--sacrebleu-tokenizer 13a|zh|char --latency-metrics AL LAAL AP DAL ATD StartOffset EndOffset"
)

NOTES = """\
- **Scores on FLEURS-mini are a rough signal.** It holds 1 to 12 sentences per source
  language (zh: 3 sentences in 2 clips, ja: 1), so BLEU, chrF and their retention move a lot
  with a single sentence; a retention above 100% means the streaming output happened to
  score higher than the offline one on these few sentences. Measure text quality on
  FLORES-200 devtest (the translator-only table).
- **Quality retention** = streaming score ÷ offline score of the same models on the same
  clips; offline = the whole clip transcribed (windows ≤ 30 s), split into sentences,
  each sentence translated. Over several pairs it is pooled: Σ streaming ÷ Σ offline score,
  so a pair whose offline score is near 0 cannot swing it.
- **Latency** is SimulEval's, per reference segment, in seconds of source audio: NCA
  (non-computation-aware) counts only the audio consumed when a unit was committed; CA adds
  the compute time of every push()/finish() call so far (simulated clock) and so depends
  on the machine. Units are words, or characters for zh/ja/ko/yue targets. AP is a fraction.
- **CA on the simulated clock is SimulEval's**: all compute so far is added to the audio
  position, as if the whole audio had been available at once, so it grows with the clip even
  when RTF < 1. A live system overlaps its compute with the audio still arriving; the
  wall-clock runs (`--clock wall`, audio released at 1×, CA = wall time since the start)
  show what a live user sees.
- **First commit** is the mean time from the start of speech (the VAD's segment start) to
  the first committed unit. **NE** is normalized erasure (flicker): units retracted from the
  displayed target text (committed + tentative) ÷ final units; an append-only display scores 0.
  **NE committed** is the same for the committed text alone, in characters (a word that gains its
  comma is not a retraction); committed text is never retracted, so it must be 0.
- **Wrong script** (zh/ja targets): the share of letters left in Latin words the source does
  not have. **Source WER**: the words the engine heard in the source (the finals' source text;
  characters for zh/ja) against the reference transcript, in % of its words, lowercased and
  without punctuation; offline: the whole clip transcribed at once.
- **RTF** = compute time ÷ audio duration on this machine (below 1 keeps up live).
- **Translator alone**: each sentence sent to the translator as the cascade sends a complete
  sentence; **tok/s** = generated target tokens ÷ time in translate(), prefill included;
  **cut by cap** counts translations stopped by the token cap rather than ended by the model.
"""


# ---------------------------------------------------------------------------------------
# Formatting


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _seconds(value_ms: float | None, digits: int = 2) -> str:
    return "–" if value_ms is None else f"{value_ms / MS_PER_S:.{digits}f}"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _share(value: float | None) -> str:
    """A small share to a tenth of a percent; "–" where it was not measured."""
    return "–" if value is None else f"{100 * value:.1f}%"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _knob(run: RunScores) -> str:
    return f"{run.knob_name}={run.knob:g}"


# ---------------------------------------------------------------------------------------
# Tables


QUALITY_HEADER = (
    "system", "knob", "pair", "segments", "BLEU", "offline BLEU", "BLEU retention",
    "chrF", "offline chrF", "chrF retention", "wrong script", "source WER", "offline source WER", "failed",
)  # fmt: skip

LATENCY_HEADER = (
    "system", "knob", "pair", "unit", "LAAL", "LAAL CA", "AL", "AL CA", "DAL", "DAL CA", "AP", "AP CA",
    "ATD", "ATD CA", "StartOffset", "EndOffset", "first commit", "first commit CA", "NE", "NE committed", "RTF",
    "offline RTF",
)  # fmt: skip

MT_HEADER = (
    "dataset", "pair", "sentences", "BLEU", "chrF", "wrong script", "tok/s", "s/sentence", "cut by cap",
    "BLEU signature",
)  # fmt: skip


def quality_table(runs: Sequence[RunScores]) -> str:
    rows = []
    for r in runs:
        offline = r.offline_quality
        rows.append(
            (
                r.system, _knob(r), r.pair, str(r.n_segments),
                _num(r.quality.bleu), _num(offline.bleu if offline else None), _percent(r.bleu_retention),
                _num(r.quality.chrf), _num(offline.chrf if offline else None), _percent(r.chrf_retention),
                _share(r.quality.wrong_script),
                _num(r.quality.source_wer), _num(offline.source_wer if offline else None),
                f"{len(r.errors)} / {len(r.offline_errors)} offline" if r.errors or r.offline_errors else "0",
            )
        )  # fmt: skip
    return table(QUALITY_HEADER, rows)


def errors_section(runs: Sequence[RunScores]) -> str:
    """Instances whose run stopped with an error, or "" when none did."""
    lines = [f"- {r.system} {_knob(r)} {r.pair}: {error}\n" for r in runs for error in r.errors]
    offline = dict.fromkeys(f"- offline {r.pair}: {error}\n" for r in runs for error in r.offline_errors)
    if not lines and not offline:
        return ""
    return (
        "\n## Failed instances\n\n"
        "An engine call raised on these; their output is what was committed before the error "
        "(scored as it is, so it lowers quality).\n\n" + "".join(lines) + "".join(offline)
    )


def latency_table(runs: Sequence[RunScores]) -> str:
    rows = []
    for r in runs:
        nca, ca = r.latency, r.latency_ca
        rows.append(
            (
                r.system, _knob(r), r.pair, r.latency_unit,
                _seconds(nca.laal_ms), _seconds(ca.laal_ms), _seconds(nca.al_ms), _seconds(ca.al_ms),
                _seconds(nca.dal_ms), _seconds(ca.dal_ms), _num(nca.ap, 2), _num(ca.ap, 2),
                _seconds(nca.atd_ms), _seconds(ca.atd_ms),
                _seconds(nca.start_offset_ms), _seconds(nca.end_offset_ms),
                _seconds(r.first_commit_ms), _seconds(r.first_commit_ca_ms),
                _num(r.normalized_erasure, 2), _num(r.committed_erasure, 2), _num(r.rtf, 2), _num(r.offline_rtf, 2),
            )
        )  # fmt: skip
    return table(LATENCY_HEADER, rows)


STEPS_HEADER = (
    "system", "knob", "pair", "steps", "skipped (stale)", "prompt tokens / step", "prefill tokens / step",
    "fallbacks",
)  # fmt: skip


def steps_table(runs: Sequence[RunScores]) -> str:
    """The sessions' steps: how many ran and were skipped, and the translator's prompt per
    step without the KV cache (all prompt tokens) and with it (tokens evaluated)."""
    rows = []
    for r in runs:
        if r.steps is None:
            continue
        n = r.steps.n_steps or 1
        rows.append(
            (
                r.system, _knob(r), r.pair, str(r.steps.n_steps), str(r.steps.n_skipped_steps),
                _num(r.steps.n_prompt_tokens / n), _num(r.steps.n_prefill_tokens / n), str(r.steps.n_fallbacks),
            )
        )  # fmt: skip
    return table(STEPS_HEADER, rows) if rows else ""


def _steps_section(runs: Sequence[RunScores], heading: str) -> list[str]:
    steps = steps_table(runs)
    return [heading, STEPS_NOTE, steps] if steps else []


STEPS_NOTE = (
    "Each step re-transcribes the open window; the direct path's step also asks the translator for a "
    "continuation (the cascade translates only complete sentences); tokens per step count the prompts, "
    "sentence finals included. Without the KV cache every "
    "prompt token is evaluated at every step; with it only the part after the cached prefix is.\n\n"
)


def mt_table(scores: Sequence[MTScores]) -> str:
    rows = [
        (
            m.dataset + (f" [{m.label}]" if m.label else ""), m.pair, str(m.n_sentences), _num(m.quality.bleu), _num(m.quality.chrf),
            _share(m.quality.wrong_script), _num(m.tokens_per_s), _num(m.mean_sentence_s, 2), str(m.n_unfinished), f"`{m.quality.bleu_signature}`",
        )
        for m in scores
    ]  # fmt: skip
    return table(MT_HEADER, rows)


def signatures(runs: Sequence[RunScores]) -> str:
    """The sacrebleu signatures used, one line each."""
    seen: dict[str, str] = {}
    for r in runs:
        seen.setdefault(r.quality.bleu_signature, f"BLEU ({r.pair.split('-')[1]})")
        seen.setdefault(r.quality.chrf_signature, "chrF")
    return "".join(f"- {what}: `{signature}`\n" for signature, what in seen.items())


# ---------------------------------------------------------------------------------------
# Documents


def _meta_lines(meta: Meta) -> str:
    packages = ", ".join(f"{name} {version}" for name, version in meta.packages.items())
    models = ", ".join(f"{role}: {name}" for role, name in meta.models.items())
    clock = f"{meta.clock} clock, {meta.chunk_ms} ms chunks" if meta.clock else "text only"
    return (
        f"- command: `{meta.command}`\n"
        f"- dataset: {meta.dataset}; {clock}\n"
        f"- machine: {meta.machine}\n"
        f"- models: {models}\n"
        f"- packages: Python {meta.python}, {packages}\n" + (f"- source: {meta.revision}\n" if meta.revision else "")
    )


def folder_report(results: BenchResults) -> str:
    """``report.md`` of one output folder."""
    parts = ["# streamst-bench report\n", _meta_lines(results.meta)]
    if results.runs:
        parts += [
            "\n## Quality\n\n", quality_table(results.runs),
            "\n## Latency (seconds)\n\n", latency_table(results.runs),
            *_steps_section(results.runs, "\n## Direct path steps\n\n"),
            "\n## sacrebleu signatures\n\n", signatures(results.runs),
            errors_section(results.runs),
        ]  # fmt: skip
    if results.mt:
        parts += ["\n## Translator alone\n\n", mt_table(results.mt)]
    parts += ["\n## Notes\n\n", NOTES]
    return "".join(parts)


@dataclass(frozen=True)
class ResultsDocument:
    """What ``RESULTS.md`` is made of."""

    results: tuple[BenchResults, ...]  # the output folders, in the order given
    report_command: str  # the command that wrote the document
    curve_name: str  # the curve's file name beside the document
    machine_notes: tuple[str, ...] = ()  # extra lines about the machine or the conditions of the run
    headline_knobs: Mapping[str, float] = field(default_factory=dict)  # system → knob of the headline table


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


SUMMARY_HEADER = (
    "system", "knob", "pairs", "BLEU retention", "chrF retention", "LAAL (s)", "LAAL CA (s)",
    "first commit (s)", "RTF",
)  # fmt: skip


def summary_table(runs: Sequence[RunScores]) -> str:
    """Per system and knob over the pairs: pooled retention (Σ streaming / Σ offline), mean
    latency and RTF; the points of the curve."""
    groups: dict[tuple[str, str], list[RunScores]] = {}
    for r in runs:
        groups.setdefault((r.system, _knob(r)), []).append(r)
    rows = [
        (
            system, knob, str(len(members)),
            _percent(pooled_retention(members, "bleu")), _percent(pooled_retention(members, "chrf")),
            _seconds(_mean(r.latency.laal_ms for r in members)), _seconds(_mean(r.latency_ca.laal_ms for r in members)),
            _seconds(_mean(r.first_commit_ms for r in members)), _num(_mean(r.rtf for r in members), 2),
        )
        for (system, knob), members in groups.items()
    ]  # fmt: skip
    return table(SUMMARY_HEADER, rows)


RETENTION_GOAL = 0.85  # the BLEU retention a latency setting must keep to count as "at equal quality"

FASTEST_HEADER = (
    "pair", "direct: fastest keeping the goal", "LAAL (s)", "BLEU retention", "chrF retention", "NE committed",
    "cascade: fastest", "LAAL (s)", "BLEU retention", "direct − cascade LAAL (s)",
)  # fmt: skip


def _fastest(runs: Sequence[RunScores]) -> RunScores | None:
    """The run with the lowest NCA LAAL that keeps the BLEU retention goal; failing that, the
    run with the best BLEU retention."""
    timed = [r for r in runs if r.latency.laal_ms is not None]
    keeping = [r for r in timed if r.bleu_retention is not None and r.bleu_retention >= RETENTION_GOAL]
    if keeping:
        return min(keeping, key=lambda r: r.latency.laal_ms or 0.0)
    return max(timed, key=lambda r: r.bleu_retention or 0.0, default=None)


def fastest_table(runs: Sequence[RunScores]) -> str:
    """Per pair, on the simulated clock: the direct setting with the lowest NCA LAAL that keeps
    ``RETENTION_GOAL`` of offline BLEU, beside the cascade's fastest setting."""
    rows = []
    simulated = [r for r in runs if r.clock == "simulated"]
    for pair in dict.fromkeys(r.pair for r in simulated):
        direct = _fastest([r for r in simulated if r.pair == pair and r.mode == "direct"])
        cascade = _fastest([r for r in simulated if r.pair == pair and r.mode == "cascade"])
        if direct is None:
            continue
        missed = "" if (direct.bleu_retention or 0.0) >= RETENTION_GOAL else " (misses the goal)"
        gap = (
            _seconds((direct.latency.laal_ms or 0.0) - (cascade.latency.laal_ms or 0.0))
            if cascade and cascade.latency.laal_ms is not None
            else "–"
        )
        rows.append(
            (
                pair, f"{direct.policy} {_knob(direct)}{missed}", _seconds(direct.latency.laal_ms),
                _percent(direct.bleu_retention), _percent(direct.chrf_retention), _num(direct.committed_erasure, 2),
                f"{cascade.policy} {_knob(cascade)}" if cascade else "–",
                _seconds(cascade.latency.laal_ms) if cascade else "–",
                _percent(cascade.bleu_retention) if cascade else "–", gap,
            )
        )  # fmt: skip
    return table(FASTEST_HEADER, rows) if rows else ""


def headline_runs(runs: Sequence[RunScores], knobs: Mapping[str, float]) -> list[RunScores]:
    """The runs at each system's headline knob (all runs of a system not in ``knobs``), by pair."""
    chosen = [r for r in runs if r.system not in knobs or r.knob == knobs[r.system]]
    pair_order = list(dict.fromkeys(r.pair for r in runs))
    return sorted(chosen, key=lambda r: pair_order.index(r.pair))


def _headline_rows(runs: Sequence[RunScores]) -> list[tuple[str, ...]]:
    rows = []
    for r in runs:
        offline = r.offline_quality
        rows.append(
            (
                r.pair, r.system, _knob(r),
                f"{_num(r.quality.bleu)} / {_num(offline.bleu if offline else None)}", _percent(r.bleu_retention),
                f"{_num(r.quality.chrf)} / {_num(offline.chrf if offline else None)}", _percent(r.chrf_retention),
                _seconds(r.latency.laal_ms), _seconds(r.latency_ca.laal_ms), _num(r.rtf, 2),
            )
        )  # fmt: skip
    return rows


HEADLINE_HEADER = (
    "pair", "system", "knob", "BLEU stream / offline", "BLEU retention", "chrF stream / offline",
    "chrF retention", "LAAL (s)", "LAAL CA (s)", "RTF",
)  # fmt: skip


def _fastest_section(runs: Sequence[RunScores]) -> list[str]:
    fastest = fastest_table(runs)
    if not fastest:
        return []
    return [
        f"\nThe fastest direct setting per pair that keeps {RETENTION_GOAL:.0%} of offline BLEU "
        "(NCA LAAL, simulated clock), beside the cascade:\n\n",
        fastest,
    ]


def results_document(document: ResultsDocument) -> str:
    """``benchmarks/RESULTS.md``: the commands, the machine, headline and full tables, the curve."""
    runs = [r for res in document.results for r in res.runs]
    mt = [m for res in document.results for m in res.mt]
    machines = sorted({res.meta.machine for res in document.results})
    parts = [
        "# streamst benchmark results\n\n",
        "Generated by `streamst-bench report`; do not edit by hand. Regenerate with the commands below.\n\n",
        "## Commands\n\n```sh\n",
        "".join(f"{res.meta.command}\n" for res in document.results),
        f"{document.report_command}\n```\n\n",
        "## Machine\n\n",
        "".join(f"- {machine}, no GPU\n" for machine in machines),
        "- Computation-aware (CA) latency and RTF are for this machine; NCA latency and quality are not.\n",
        "".join(f"- {note}\n" for note in document.machine_notes),
    ]
    parts.append("\n## Runs\n")
    for res in document.results:
        parts += ["\n", _meta_lines(res.meta)]
    if runs:
        datasets = ", ".join(dict.fromkeys(res.meta.dataset for res in document.results if res.runs))
        parts += [
            f"\n## Streaming vs offline ({datasets})\n\n",
            table(HEADLINE_HEADER, _headline_rows(headline_runs(runs, document.headline_knobs))),
            *_fastest_section(runs),
            "\nPer system and latency knob over the pairs (the points of the curve):\n\n",
            summary_table(runs),
            f"\n![quality retention against LAAL]({document.curve_name})\n",
            "\n### Quality\n\n", quality_table(runs),
            "\n### Latency (seconds)\n\n", latency_table(runs),
            *_steps_section(runs, "\n### Direct path steps\n\n"),
            "\n### sacrebleu signatures\n\n", signatures(runs),
            errors_section(runs),
        ]  # fmt: skip
    if mt:
        parts += ["\n## Translator alone\n\n", mt_table(mt)]
    parts += [
        "\n## Rescoring\n\n",
        "Each run folder holds SimulEval instance logs (`streaming/<run>/<pair>/instances.log`, "
        "`offline/<pair>/instances.log`, with `config.yaml`); rescore one with\n\n",
        f"```sh\n{SIMULEVAL_RESCORE}\n```\n\n",
        "(SimulEval 1.1.4 computes its plain AL/LAAL on `elapsed` when given `--computation-aware`; "
        "compare its non-CA columns.)\n",
        "\n## Notes\n\n",
        NOTES,
    ]
    return "".join(parts)
