"""Figures of a tournament report (matplotlib, Agg backend, imported inside the functions).

* :func:`win_rate_heatmap`: the win-rate matrix, row beats column, each cell annotated with
  the mean judge probability and its interval;
* :func:`policy_panel`: exploitability with its bootstrap interval and KL(pi || mu) with
  +- 1 standard error, one bar per policy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def win_rate_heatmap(result: Any, path: str | Path) -> Path:
    """Draw ``result.win_rate`` (n, n) as a heatmap with 'p\\n[low, high]' in every cell; save a PNG."""
    plt = _pyplot()
    n = result.n
    size = max(4.0, 1.5 * n + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    im = ax.imshow(result.win_rate, cmap="RdBu", vmin=0.0, vmax=1.0)
    for i in range(n):
        for j in range(n):
            p = result.win_rate[i, j]
            if i == j:
                text = "0.50"
            else:
                text = f"{p:.2f}\n[{result.win_low[i, j]:.2f}, {result.win_high[i, j]:.2f}]"
            color = "white" if abs(p - 0.5) > 0.3 else "black"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(range(n), labels=result.names, rotation=30, ha="right")
    ax.set_yticks(range(n), labels=result.names)
    ax.set_xlabel("opponent (column)")
    ax.set_ylabel("policy (row)")
    conf = f"{result.confidence:.0%}"
    ax.set_title(
        f"P(row beats column), judge: {result.judge}\n{conf} {result.interval} intervals", fontsize=10
    )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _errors(point: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    lo = np.where(np.isnan(low), 0.0, np.clip(point - low, 0.0, None))
    hi = np.where(np.isnan(high), 0.0, np.clip(high - point, 0.0, None))
    return np.stack([lo, hi])  # (2, n)


def policy_panel(result: Any, path: str | Path) -> Path:
    """Two bar charts: exploitability (bootstrap interval) and KL(pi || mu) (+- 1 SE); save a PNG."""
    plt = _pyplot()
    n = result.n
    x = np.arange(n)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(7.0, 1.6 * n + 4.0), 3.6))
    expl = np.nan_to_num(result.exploitability, nan=0.0)
    ax1.bar(x, expl, color="#c0504d", yerr=_errors(expl, result.exploit_low, result.exploit_high), capsize=4)
    ax1.set_xticks(x, labels=result.names, rotation=30, ha="right")
    ax1.set_ylabel("max_pi' P(pi' > pi) - 1/2")
    ax1.set_title(f"exploitability ({result.exploitability_method})", fontsize=10)
    ax1.axhline(0.0, color="black", linewidth=0.8)
    kl = np.nan_to_num(result.kl, nan=0.0)
    se = np.nan_to_num(result.kl_se, nan=0.0)
    ax2.bar(x, kl, color="#4f81bd", yerr=se, capsize=4)
    for i in range(n):
        if math.isnan(result.kl[i]):
            ax2.text(i, 0.0, "n/a", ha="center", va="bottom", fontsize=8)
    ax2.set_xticks(x, labels=result.names, rotation=30, ha="right")
    ax2.set_ylabel("nats")
    ax2.set_title("KL(pi || mu), Monte Carlo +- 1 SE", fontsize=10)
    ax2.axhline(0.0, color="black", linewidth=0.8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
