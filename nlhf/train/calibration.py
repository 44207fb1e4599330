"""Calibration of predicted preferences: expected calibration error and a reliability plot.

A judge predicts ``prob = P(first > second | x)``; the label is the observed (possibly
soft) ``P(first > second)``. Split [0, 1] into ``bins`` equal-width bins of ``prob``
(the last bin closed, ``prob = 1`` included); in bin b with n_b examples let
``conf_b`` = mean prob and ``freq_b`` = mean label. Then

    ECE = sum_b (n_b / N) |freq_b - conf_b|

(Naeini et al. 2015; Guo et al. 2017 use the same estimator on the top-class
confidence).

Both orientations (:func:`both_orientations`, what ``nlhf train-pm`` / ``train-rm``
report): every pair enters twice, as (a, b, label) with P(a > b) and as (b, a, 1 - label)
with P(b > a) = 1 - P(a > b) (exact for both judges: the preference model is symmetric by
construction, THEORY.md Sec. 1, and sigmoid(-d) = 1 - sigmoid(d) for the reward model).
Without it, a data set whose pairs all list the chosen response first (HH-RLHF: every
label is 1) puts the mean label at 1 in every bin, and the ECE is just 1 - mean(prob),
a measure of confidence, not of calibration: a perfectly calibrated judge would score
badly. Over both orientations the bins are symmetric about 1/2 (bin b mirrors bin
bins-1-b), the mean label is 1/2 overall, and the ECE compares the predicted and the
observed frequency of "first wins" in each bin, as intended; with hard labels it equals
the top-class ECE of the pairs (Guo et al.), up to probabilities lying exactly on a bin
edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ReliabilityTable:
    """Per-bin statistics: ``count`` (n_b), ``confidence`` (mean prob), ``frequency`` (mean label)."""

    edges: tuple[float, ...]  # (bins + 1,)
    count: tuple[int, ...]  # (bins,)
    confidence: tuple[float, ...]  # (bins,) NaN for empty bins
    frequency: tuple[float, ...]  # (bins,) NaN for empty bins
    ece: float


def reliability_table(probs: Any, labels: Any, bins: int = 10) -> ReliabilityTable:
    """Bin ``probs`` (N,) against ``labels`` (N,) in [0, 1]; see the module docstring.

    Example: probs (0.1, 0.3, 0.8, 0.9), labels (0, 1, 1, 1), 2 bins: bin [0, .5) has
    conf 0.2, freq 0.5; bin [.5, 1] conf 0.85, freq 1 -> ECE = 0.5 * 0.3 + 0.5 * 0.15 = 0.225.
    """
    import numpy as np

    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"probs and labels differ in size: {p.shape[0]} vs {y.shape[0]}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if p.size == 0:
        raise ValueError("no predictions to calibrate")
    for name, v in (("probs", p), ("labels", y)):
        bad = ~((v >= 0) & (v <= 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} must lie in [0, 1]; row {i} is {v[i]}")
    which = np.minimum((p * bins).astype(np.int64), bins - 1)  # (N,) bin index, prob 1 in the last bin
    count = np.bincount(which, minlength=bins)  # (bins,)
    sum_p = np.bincount(which, weights=p, minlength=bins)
    sum_y = np.bincount(which, weights=y, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(count > 0, sum_p / count, np.nan)
        freq = np.where(count > 0, sum_y / count, np.nan)
    ece = float(np.sum(count[count > 0] / p.size * np.abs(freq[count > 0] - conf[count > 0])))
    return ReliabilityTable(
        edges=tuple(float(e) for e in np.linspace(0.0, 1.0, bins + 1)),
        count=tuple(int(c) for c in count),
        confidence=tuple(float(c) for c in conf),
        frequency=tuple(float(f) for f in freq),
        ece=ece,
    )


def both_orientations(probs: Any, labels: Any) -> tuple[Any, Any]:
    """Each pair as (a, b, label) and (b, a, 1 - label): returns (2N,) probs ``[p, 1 - p]`` and labels ``[y, 1 - y]``.

    See the module docstring (why: with all labels 1 the one-sided ECE measures nothing).
    Example: probs (0.8, 0.3), labels (1, 1) -> probs (0.8, 0.3, 0.2, 0.7), labels (1, 1, 0, 0).
    """
    import numpy as np

    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"probs and labels differ in size: {p.shape[0]} vs {y.shape[0]}")
    return np.concatenate([p, 1.0 - p]), np.concatenate([y, 1.0 - y])


def expected_calibration_error(probs: Any, labels: Any, bins: int = 10) -> float:
    """ECE of ``probs`` against ``labels`` with ``bins`` equal-width bins (module docstring)."""
    return reliability_table(probs, labels, bins).ece


def plot_reliability(table: ReliabilityTable, path: str | Path, title: str = "") -> Path:
    """Save a reliability diagram (mean label against mean prob per bin, and the counts) as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    centers = [(a + b) / 2 for a, b in zip(table.edges[:-1], table.edges[1:])]
    width = table.edges[1] - table.edges[0]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=(3, 1), sharex=True)
    filled = [i for i, c in enumerate(table.count) if c > 0]
    top.bar([centers[i] for i in filled], [table.frequency[i] for i in filled], width=width * 0.9,
            color="#4c72b0", alpha=0.8, label="mean label (observed)")  # fmt: skip
    top.plot([table.confidence[i] for i in filled], [table.frequency[i] for i in filled], "o", color="#dd8452",
             label="(mean prob, mean label)")  # fmt: skip
    top.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("P(first > second): observed")  # over both orientations in fit.py
    top.set_title(title or f"reliability (ECE = {table.ece:.3f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, table.count, width=width * 0.9, color="grey")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("predicted P(first > second)")
    bottom.set_ylabel("pairs")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = [
    "ReliabilityTable",
    "both_orientations",
    "reliability_table",
    "expected_calibration_error",
    "plot_reliability",
]
