"""``curve.png``: quality retention against LAAL, one line per mode/policy, one point per knob.

Each point pools its system's runs at one knob value over the pairs with an offline score
above 0: retention is the sum of streaming scores over the sum of offline scores (see
``scoring.pooled_retention``), LAAL the mean over those pairs. The left panels use
non-computation-aware LAAL, the right ones the computation-aware LAAL of the same runs on
this machine; one row per retention metric (BLEU, chrF); 100% is the offline run of the
same models.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from streamst.benchmarks.scoring import RunScores, pooled_retention

log = logging.getLogger("streamst.benchmarks.plot")

MS_PER_S = 1000
RetentionMetric = Literal["bleu", "chrf"]
RETENTION_METRICS: tuple[RetentionMetric, ...] = ("bleu", "chrf")
METRIC_NAMES = {"bleu": "BLEU", "chrf": "chrF"}
PANEL_SIZE_IN = (5.0, 4.4)
DPI = 150
PERCENT = 100
Y_MARGIN_PERCENT = 10  # room above and below the points
LEGEND_COLUMNS = 3
LEGEND_ROW_FRACTION = 0.035  # of one panel row's height, per legend row
LABEL_STAGGER_PT = 9  # vertical step between the knob labels of one line, so close points stay legible


@dataclass(frozen=True)
class CurvePoint:
    system: str  # "cascade/sentence"
    knob_name: str  # "step_ms"
    knob: float  # 1000
    laal_s: float  # mean non-computation-aware LAAL over the pairs
    laal_ca_s: float  # mean computation-aware LAAL over the pairs
    retention: float  # pooled retention over the pairs, a fraction
    n_pairs: int

    @property
    def knob_label(self) -> str:
        return f"{self.knob_name}={self.knob:g}"


def curve_points(runs: Sequence[RunScores], metric: RetentionMetric = "bleu") -> list[CurvePoint]:
    """One point per (system, knob), sorted by system then knob."""
    groups: dict[tuple[str, str, float], list[RunScores]] = {}
    for run in runs:
        groups.setdefault((run.system, run.knob_name, run.knob), []).append(run)
    points = []
    for (system, knob_name, knob), members in groups.items():
        timed = [
            r
            for r in members
            if r.latency.laal_ms is not None
            and r.latency_ca.laal_ms is not None
            and r.offline_quality is not None
            and getattr(r.offline_quality, metric) > 0
        ]
        retention = pooled_retention(timed, metric)
        if retention is None:
            log.info("%s %s=%g: no pair with an offline score; not plotted", system, knob_name, knob)
            continue
        points.append(
            CurvePoint(
                system=system,
                knob_name=knob_name,
                knob=knob,
                laal_s=statistics.mean(r.latency.laal_ms for r in timed) / MS_PER_S,
                laal_ca_s=statistics.mean(r.latency_ca.laal_ms for r in timed) / MS_PER_S,
                retention=retention,
                n_pairs=len(timed),
            )
        )
    return sorted(points, key=lambda p: (p.system, p.knob))


def draw_curve(
    runs: Sequence[RunScores],
    path: str | Path,
    metrics: Sequence[RetentionMetric] = RETENTION_METRICS,
    title: str | None = None,
) -> Path:
    """Draw the curve into ``path`` (PNG), a row of panels per retention metric, and return it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        from streamst.errors import StreamstError

        raise StreamstError("drawing curve.png needs matplotlib: pip install 'streamst[bench]'") from e
    width_in, height_in = PANEL_SIZE_IN
    figure, grid = plt.subplots(
        len(metrics), 2, figsize=(2 * width_in, len(metrics) * height_in), dpi=DPI, squeeze=False
    )
    for (nca_axes, ca_axes), metric in zip(grid, metrics, strict=True):
        points = curve_points(runs, metric)
        _draw_panel(nca_axes, points, computation_aware=False)
        _draw_panel(ca_axes, points, computation_aware=True)
        values = [PERCENT * p.retention for p in points] or [PERCENT]
        bottom = max(0.0, min(min(values), PERCENT) - Y_MARGIN_PERCENT)
        for axes in (nca_axes, ca_axes):
            axes.set_ylim(bottom, max(max(values), PERCENT) + Y_MARGIN_PERCENT)
        nca_axes.set_ylabel(f"quality retention, {METRIC_NAMES[metric]} (% of offline)")
    # One legend under the panels, so it hides no point.
    handles, labels = grid[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=LEGEND_COLUMNS, fontsize=7, frameon=False)
    figure.suptitle(title or "Quality retention in streaming translation")
    legend_rows = -(-len(labels) // LEGEND_COLUMNS)
    figure.tight_layout(rect=(0, LEGEND_ROW_FRACTION * legend_rows / len(metrics), 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def _draw_panel(axes, points: Sequence[CurvePoint], computation_aware: bool) -> None:
    axes.axhline(PERCENT, color="0.5", linewidth=1, linestyle=":", label="offline (same models)")
    for i, system in enumerate(dict.fromkeys(p.system for p in points)):
        line = [p for p in points if p.system == system]
        xs = [p.laal_ca_s if computation_aware else p.laal_s for p in line]
        ys = [PERCENT * p.retention for p in line]
        n_pairs = max(p.n_pairs for p in line)
        label = f"{system}, knob {line[0].knob_name} ({n_pairs} pair{'s' if n_pairs != 1 else ''})"
        axes.plot(xs, ys, marker="o", color=f"C{i}", label=label)
        for k, (p, x, y) in enumerate(zip(line, xs, ys, strict=True)):
            offset = (6, 4 - LABEL_STAGGER_PT * (k % 3))
            axes.annotate(f"{p.knob:g}", (x, y), textcoords="offset points", xytext=offset, fontsize=7, color=f"C{i}")
    kind = "computation-aware, this machine" if computation_aware else "non-computation-aware"
    axes.set_title(f"LAAL {kind}", fontsize=9)
    axes.set_xlabel("stream translation latency: LAAL (s)")
    axes.set_xlim(left=0, right=max([1.0, *(p.laal_ca_s if computation_aware else p.laal_s for p in points)]) * 1.15)
    axes.grid(True, alpha=0.3)
