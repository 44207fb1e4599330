"""Figures of the lab: dynamics on rock-paper-scissors, bandit learning curves, equilibria.

matplotlib is imported inside each function and drawn on a bare ``Figure`` with the Agg
canvas (no pyplot state, no display needed), so importing :mod:`nlhf.lab` stays cheap.
Each function writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _simplex_xy(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric (.., 3) -> 2-D: vertex 0 at (0, 0), vertex 1 at (1, 0), vertex 2 on top."""
    p = np.atleast_2d(p)
    return p[:, 1] + 0.5 * p[:, 2], (np.sqrt(3.0) / 2.0) * p[:, 2]


def plot_dynamics(comparison: dict, path) -> Path:
    """Simplex trajectories and distance-to-equilibrium curves of a 3-action game.

    ``comparison`` is the output of :func:`nlhf.lab.showcase.compare_dynamics`: a dict with
    ``names``, ``pi_tau`` (pi*_tau), ``nash`` (tau = 0 equilibrium) and ``runs``, a list of
    dicts with ``label``, ``trajectory`` (T+1, 3), ``kl`` (T+1,) and ``target`` text.
    """
    fig = _figure(12.0, 5.2)
    ax_s, ax_d = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    names = comparison["names"]
    corners = np.eye(3)
    cx, cy = _simplex_xy(np.vstack([corners, corners[:1]]))
    ax_s.plot(cx, cy, color="black", lw=1)
    for k, (x, y) in enumerate(zip(cx[:3], cy[:3])):
        ax_s.annotate(
            names[k], (x, y), textcoords="offset points", xytext=(0, -12 if y == 0 else 6), ha="center"
        )
    for i, run in enumerate(comparison["runs"]):
        if not run.get("on_simplex", True):
            continue
        x, y = _simplex_xy(run["trajectory"])
        ax_s.plot(x, y, color=_COLORS[i % len(_COLORS)], lw=0.9, alpha=0.85, label=run["label"])
        ax_s.plot(x[-1:], y[-1:], "o", color=_COLORS[i % len(_COLORS)], ms=4)
    for key, marker, label in (
        ("pi_tau", "*", "pi*_tau"),
        ("nash", "x", "Nash (tau = 0)"),
        ("mu", "s", "mu"),
    ):
        if key in comparison:
            x, y = _simplex_xy(comparison[key])
            ax_s.plot(x, y, marker, color="black", ms=10 if marker == "*" else 7, label=label)
    ax_s.set_aspect("equal")
    ax_s.axis("off")
    ax_s.legend(loc="upper left", fontsize=7, frameon=False)
    ax_s.set_title(f"trajectories on the simplex (tau = {comparison['tau']:g})", fontsize=10)

    for i, run in enumerate(comparison["runs"]):
        kl = np.maximum(np.asarray(run["kl"]), 1e-18)
        t = np.arange(kl.size)
        ax_d.plot(
            t[1:], kl[1:], color=_COLORS[i % len(_COLORS)], lw=1.2, label=f"{run['label']}  [{run['target']}]"
        )
    if "theorem1" in comparison:
        t = np.arange(1, len(comparison["runs"][0]["kl"]))
        ax_d.plot(t, comparison["theorem1"][1:], "k--", lw=0.8, label="Theorem 1 bound 8/(tau^2 (T+1))")
    ax_d.set_xscale("log")
    ax_d.set_yscale("log")
    ax_d.set_ylim(1e-16, None)
    ax_d.set_xlabel("step t")
    ax_d.set_ylabel("KL(target, pi_t)")
    ax_d.set_title("distance to the equilibrium (last iterate unless 'average')", fontsize=10)
    ax_d.legend(fontsize=7, frameon=False, loc="lower left")
    return _save(fig, path)


def plot_bandit_curves(run, path, closed_forms: dict | None = None) -> Path:
    """Learning curves of the PsiPO bandit: action probability against step.

    One row per tau, DPO beside IPO (one column per method); solid line = mean over seeds,
    band = min..max over seeds; dashed = the IPO closed form (``closed_forms[tau]``).
    ``run`` is a :class:`nlhf.lab.psipo.BanditRun`.
    """
    M, K = len(run.methods), len(run.taus)
    fig = _figure(4.6 * M, 2.6 * K + 0.6)
    steps = run.record_steps
    for ki, tau in enumerate(run.taus):
        for mi, method in enumerate(run.methods):
            ax = fig.add_subplot(K, M, ki * M + mi + 1)
            curves = run.curves[mi, ki]  # (S, R, n)
            for a, name in enumerate(run.actions):
                color = _COLORS[a % len(_COLORS)]
                ax.plot(steps, curves[:, :, a].mean(axis=0), color=color, lw=1.3, label=f"pi({name})")
                ax.fill_between(
                    steps, curves[:, :, a].min(axis=0), curves[:, :, a].max(axis=0), color=color, alpha=0.2
                )
                if method == "ipo" and closed_forms is not None and tau in closed_forms:
                    ax.axhline(closed_forms[tau][a], color=color, ls="--", lw=0.8)
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{method.upper()}  tau = {tau:g}  ({run.dataset})", fontsize=9)
            if ki == K - 1:
                ax.set_xlabel("step")
            if mi == 0:
                ax.set_ylabel("action probability")
            if ki == 0 and mi == M - 1:
                ax.legend(fontsize=7, frameon=False)
    return _save(fig, path)


def plot_equilibria(entries: list[dict], path) -> Path:
    """Bar charts of equilibria, one panel per game.

    ``entries``: dicts with ``title``, ``names`` and ``policies`` (label -> probabilities).
    """
    cols = min(3, len(entries))
    rows = int(np.ceil(len(entries) / cols))
    fig = _figure(4.4 * cols, 3.0 * rows)
    for e_idx, entry in enumerate(entries):
        ax = fig.add_subplot(rows, cols, e_idx + 1)
        names = entry["names"]
        labels = list(entry["policies"])
        width = 0.8 / max(1, len(labels))
        x = np.arange(len(names))
        for j, label in enumerate(labels):
            ax.bar(
                x + (j - (len(labels) - 1) / 2) * width,
                entry["policies"][label],
                width,
                label=label,
                color=_COLORS[j % len(_COLORS)],
            )
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=7, rotation=30 if len(names) > 4 else 0)
        ax.set_ylim(0, 1.05)
        ax.set_title(entry["title"], fontsize=9)
        if e_idx == 0 or len(labels) > len(entries[0]["policies"]):
            ax.legend(fontsize=7, frameon=False)
    return _save(fig, path)


def _ternary_frame(ax, names) -> None:
    """The outline of the 3-simplex with its corners labelled, no axes."""
    corners = np.eye(3)
    cx, cy = _simplex_xy(np.vstack([corners, corners[:1]]))
    ax.plot(cx, cy, color="black", lw=1)
    for k, (x, y) in enumerate(zip(cx[:3], cy[:3])):
        ax.annotate(
            f"all {names[k]}",
            (x, y),
            textcoords="offset points",
            xytext=(0, -12 if y == 0 else 6),
            ha="center",
        )
    ax.set_aspect("equal")
    ax.axis("off")


def plot_sampling_ternary(result: dict, corners: np.ndarray, path) -> Path:
    """Which class RLHF picks, and its optimum's exploitability, over sampling distributions.

    ``result``: :func:`nlhf.lab.sampling_dependence.sampling_sweep` on the centroids of
    ``corners`` (K^2, 3, 3), the cells of :func:`~nlhf.lab.sampling_dependence.simplex_cells`.
    Left: each cell coloured by argmax r_nu (the Bradley-Terry fit on pairs from nu);
    right: exploitability of the RLHF optimum mu exp(r_nu/tau)/Z. The Nash equilibrium
    (the same from every nu) is marked on both.
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    names, rows, tau = result["names"], result["rows"], result["tau"]
    cells = []
    for cell in corners:
        x, y = _simplex_xy(cell)
        cells.append(np.column_stack([x, y]))
    fig = _figure(11.0, 5.0)
    ax_c, ax_e = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colors = [
        _COLORS[names.index(row["top_class"]) % len(_COLORS)] if row["top_class"] in names else "#bbbbbb"
        for row in rows
    ]  # grey: a tie
    ax_c.add_collection(PolyCollection(cells, facecolors=colors, edgecolors=colors, linewidths=0.3))
    handles = [
        Patch(color=_COLORS[k % len(_COLORS)], label=f"RLHF picks {name}") for k, name in enumerate(names)
    ]
    expl = np.array([row["rlhf_exploitability"] for row in rows])
    heat = PolyCollection(cells, array=expl, cmap="viridis", edgecolors="face", linewidths=0.3)
    ax_e.add_collection(heat)
    fig.colorbar(heat, ax=ax_e, shrink=0.7, label="exploitability of the RLHF optimum")
    nash_x, nash_y = _simplex_xy(np.asarray(rows[0]["nash"]))
    for ax in (ax_c, ax_e):
        _ternary_frame(ax, names)
        ax.plot(nash_x, nash_y, "*", color="white", mec="black", ms=16, label="Nash equilibrium")
    ax_c.legend(handles=[*handles, *ax_c.get_lines()[-1:]], loc="upper left", fontsize=7, frameon=False)
    ax_c.set_title("argmax of the Bradley-Terry reward fitted on pairs ~ nu x nu", fontsize=9)
    ax_e.set_title(
        f"max_y P(y > RLHF optimum) - 1/2, tau = {tau:g} (Nash: {rows[0]['nash_exploitability']:.1e})",
        fontsize=9,
    )
    return _save(fig, path)


def plot_sampling_path(result: dict, t: np.ndarray, path) -> Path:
    """The RLHF optimum and the Nash answers along a path of sampling distributions.

    ``result``: :func:`nlhf.lab.sampling_dependence.sampling_sweep` on the path's
    points, at positions ``t`` in [0, 1]. Three panels: the Bradley-Terry rewards r_nu; the
    RLHF optimum's distribution (solid) against pi*_tau (dashed, flat); the
    exploitability of the RLHF optimum against that of the Nash equilibrium and pi*_tau.
    """
    names, rows, tau = result["names"], result["rows"], result["tau"]
    fig = _figure(14.0, 4.2)
    ax_r, ax_p, ax_e = (fig.add_subplot(1, 3, k) for k in (1, 2, 3))
    reward = np.array([row["reward"] for row in rows])  # (T, n)
    rlhf = np.array([row["rlhf"] for row in rows])
    pi_tau = np.array([row["pi_tau"] for row in rows])
    for k, name in enumerate(names[: len(_COLORS)]):
        color = _COLORS[k]
        ax_r.plot(t, reward[:, k], color=color, lw=1.3, label=name)
        ax_p.plot(t, rlhf[:, k], color=color, lw=1.3, label=f"RLHF {name}")
        ax_p.plot(t, pi_tau[:, k], color=color, lw=1.0, ls="--")
    ax_e.plot(t, [row["rlhf_exploitability"] for row in rows], color=_COLORS[1], lw=1.3, label="RLHF optimum")
    ax_e.plot(t, [row["nash_exploitability"] for row in rows], "k-", lw=1.0, label="Nash equilibrium")
    ax_e.plot(
        t,
        [row["pi_tau_regularized_exploitability"] for row in rows],
        "k--",
        lw=1.0,
        label="pi*_tau (regularised)",
    )
    ax_r.set_title("Bradley-Terry reward r_nu (centred under nu)", fontsize=9)
    ax_p.set_title(f"RLHF optimum (solid) vs pi*_tau (dashed), tau = {tau:g}", fontsize=9)
    ax_e.set_title("exploitability", fontsize=9)
    ax_p.set_ylim(-0.02, 1.02)
    for ax in (ax_r, ax_p, ax_e):
        ax.set_xlabel("t: sampling distribution (1 - t) nu_a + t nu_b")
        ax.legend(fontsize=7, frameon=False)
    return _save(fig, path)


def plot_compare(result: dict, path) -> Path:
    """Distance to target against T, log-log, one line per algorithm, one panel per game.

    ``result`` is the output of :func:`nlhf.lab.compare.compare`: rows with a ``curve``
    (TV to the row's target at t = 0..T) are drawn from t = 1; closed-form rows (no curve)
    are dashed horizontal lines at their distance to pi*_tau.
    """
    import matplotlib

    games = result["games"]
    fig = _figure(5.2 * len(games), 4.8)
    cmap = matplotlib.colormaps["tab10"]
    for g_idx, (name, entry) in enumerate(games.items()):
        ax = fig.add_subplot(1, len(games), g_idx + 1)
        for r_idx, row in enumerate(entry["rows"]):
            color = cmap(r_idx % 10)
            if row["curve"] is None:
                value = max(next(iter(row["tv"].values())), 1e-16)
                ax.axhline(value, color=color, ls="--", lw=0.9, label=f"{row['label']} (vs pi_tau)")
                continue
            tv = np.maximum(np.asarray(row["curve"]), 1e-16)
            style = "-" if r_idx < 10 else "-."
            label = f"{row['label']} -> {row['target']}"
            ax.plot(np.arange(1, tv.size), tv[1:], color=color, ls=style, lw=1.1, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(1e-16, 2.0)
        ax.set_xlabel("step T")
        ax.set_ylabel("TV(pi_T, target)")
        ax.set_title(f"{name} (n = {entry['n']}, tau = {result['tau']:g})", fontsize=10)
        if g_idx == 0:
            ax.legend(fontsize=6, frameon=False, loc="lower left")
    return _save(fig, path)
