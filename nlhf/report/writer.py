"""Write a tournament's report: heatmap PNG, markdown table, self-contained HTML, JSON and samples.

:func:`write_report` puts into ``out_dir``:

==================  =========================================================================
``win_rates.png``   the win-rate heatmap (row beats column), mean probability and interval per cell
``policies.png``    exploitability (bootstrap interval) and KL(pi || mu) (+- 1 SE) per policy
``tournament.md``   :meth:`TournamentResult.to_markdown` plus the caller's sections
``report.html``     one self-contained page (CSS inline, every image a base64 data URI; the
                    tables have ids ``win-rates`` and ``policies``)
``results.json``    :meth:`TournamentResult.to_dict` (NaN written as null)
``samples.jsonl``   every sampled response: policy, prompt index, sample, prompt, response, length
==================  =========================================================================
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nlhf.report.figures import policy_panel, win_rate_heatmap
from nlhf.report.html import escape, figure, markdown_to_html, page

SAMPLES_SHOWN = 3  # prompts whose responses the HTML page shows per policy


def _num(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _cell_color(p: float) -> str:
    """Background for a win-rate cell: blue when the row wins, red when it loses (white at 1/2)."""
    d = max(-0.5, min(0.5, p - 0.5)) * 2.0  # [-1, 1]
    if d >= 0:
        r, g, b = 255 - int(120 * d), 255 - int(80 * d), 255
    else:
        r, g, b = 255, 255 + int(80 * d), 255 + int(120 * d)
    return f"#{r:02x}{g:02x}{b:02x}"


def win_rate_table_html(result: Any) -> str:
    n = result.n
    head = '<tr><th class="name">row beats column</th>' + "".join(
        f"<th>{escape(x)}</th>" for x in result.names
    )
    rows = [head + "</tr>"]
    for i, name in enumerate(result.names):
        cells = [f'<td class="name">{escape(name)}</td>']
        for j in range(n):
            if i == j:
                cells.append('<td class="diag">0.500</td>')
                continue
            p = result.win_rate[i, j]
            ci = f"[{_num(result.win_low[i, j])}, {_num(result.win_high[i, j])}]"
            title = f"{float(result.wins[i, j]):.1f} expected wins of {int(result.n_games[i, j])} comparisons"
            if result.interval == "cluster_t" and result.win_se is not None:
                title += f" (prompt-clustered t interval, standard error {float(result.win_se[i, j]):.4f})"
            elif result.n_effective is not None:
                title += f" (interval on {float(result.n_effective[i, j]):.1f} effective comparisons)"
            cells.append(
                f'<td style="background:{_cell_color(p)}" title="{escape(title)}">{_num(p)}'
                f'<span class="ci">{ci}</span></td>'
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return '<table id="win-rates">\n' + "\n".join(rows) + "\n</table>"


def policy_table_html(result: Any) -> str:
    classes = list(result.class_names or ()) if result.class_distribution is not None else []
    head = (
        '<tr><th class="name">policy</th><th>KL(pi || mu) ± SE</th><th>mean length</th><th>truncated</th>'
        "<th>exploitability [interval]</th>" + "".join(f"<th>{escape(c)}</th>" for c in classes) + "</tr>"
    )
    rows = [head]
    for i, name in enumerate(result.names):
        kl = "n/a" if math.isnan(result.kl[i]) else f"{result.kl[i]:.3f} ± {result.kl_se[i]:.3f}"
        expl = (f"{_num(result.exploitability[i])}<span class=\"ci\">[{_num(result.exploit_low[i])}, "
                f"{_num(result.exploit_high[i])}]</span>")  # fmt: skip
        cells = [
            f'<td class="name">{escape(name)}</td>',
            f"<td>{escape(kl)}</td>",
            f"<td>{result.mean_length[i]:.1f}</td>",
            f"<td>{result.truncated[i]:.2f}</td>",
            f"<td>{expl}</td>",
        ]
        if classes:
            cells += [f"<td>{v:.2f}</td>" for v in result.class_distribution[i]]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return '<table id="policies">\n' + "\n".join(rows) + "\n</table>"


def samples_html(result: Any, shown: int = SAMPLES_SHOWN) -> str:
    """The responses to the first ``shown`` prompts, one collapsible block per policy."""
    from nlhf.data.schema import prompt_text

    out = []
    for name in result.names:
        by_prompt = result.responses_of(name)
        items = []
        for p in range(min(shown, len(result.prompts))):
            items.append(f"<p><strong>Prompt {p}:</strong> {escape(prompt_text(result.prompts[p]))}</p>")
            items += [f'<div class="response">{escape(text)}</div>' for text in by_prompt[p]]
        out.append(f"<details><summary>{escape(name)}</summary>{''.join(items)}</details>")
    return "\n".join(out)


def report_html(
    result: Any,
    *,
    title: str,
    heatmap: Path,
    panel: Path,
    sections: Sequence[tuple[str, str]],
    images: Mapping[str, str | Path],
) -> str:
    from nlhf.config import to_dict
    from nlhf.eval.result import INTERVAL_LABELS

    cfg = result.config
    setup = (
        f"Judge: <strong>{escape(result.judge)}</strong>. {len(result.prompts)} prompts × "
        f"{cfg.samples_per_prompt} samples per policy (at most {cfg.max_new_tokens} new tokens, temperature "
        f"{cfg.temperature:g}, top_k {cfg.top_k}, top_p {cfg.top_p:g}, seed {cfg.seed}). Reference mu: "
        f"{escape(result.reference or 'none')}. Intervals: {escape(INTERVAL_LABELS.get(result.interval, result.interval))}"
        f" at {result.confidence:.0%}. Exploitability: {escape(result.exploitability_method)}."
    )
    body = [f"<h1>{escape(title)}</h1>", f"<p>{setup}</p>"]
    for note in result.notes:
        body.append(f'<p class="note">{escape(note)}</p>')
    body += ["<h2>Win rates (row beats column)</h2>", win_rate_table_html(result),
             figure(heatmap, "Win rate of the row policy against the column policy, with intervals.", "win-rate heatmap"),
             "<h2>Policies</h2>", policy_table_html(result),
             figure(panel, "Exploitability (bootstrap interval) and KL(pi || mu) (± 1 SE) per policy.", "policy panel"),
             "<h2>How these numbers are computed</h2>",
             "<ul>" + "".join(f"<li>{escape(s)}</li>" for s in result.semantics()) + "</ul>"]  # fmt: skip
    for heading, text in sections:
        body += [f"<h2>{escape(heading)}</h2>", markdown_to_html(text)]
    if images:
        body.append("<h2>Figures</h2>")
        body += [figure(path, caption) for caption, path in images.items()]
    body += ["<h2>Sample responses</h2>", samples_html(result), "<h2>Configuration</h2>",
             f"<pre>{escape(json.dumps(to_dict(cfg), indent=2))}</pre>"]  # fmt: skip
    if result.timings:
        body.append(
            "<p>Time: " + ", ".join(f"{escape(k)} {v:.1f} s" for k, v in result.timings.items()) + "</p>"
        )
    return page(title, "\n".join(body))


def write_report(
    result: Any,
    out_dir: str | Path,
    *,
    title: str = "nlhf tournament",
    sections: Sequence[tuple[str, str]] = (),
    images: Mapping[str, str | Path] | None = None,
) -> dict[str, Path]:
    """Write the report files into ``out_dir`` (created) and return their paths.

    ``sections``: extra (heading, markdown-ish text) blocks, appended to the markdown file
    and rendered into the HTML page (:func:`nlhf.report.html.markdown_to_html`).
    ``images``: caption -> image path (png, jpg, gif, svg), embedded in the HTML page.
    Returns ``{"heatmap", "policies_plot", "markdown", "html", "json", "samples"}`` -> path.
    """
    images = dict(images or {})
    missing = [f"{caption!r}: {path}" for caption, path in images.items() if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"write_report: image files not found: {', '.join(missing)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "heatmap": win_rate_heatmap(result, out / "win_rates.png"),
        "policies_plot": policy_panel(result, out / "policies.png"),
    }
    md = result.to_markdown(title)
    for heading, text in sections:
        md += f"\n## {heading}\n\n{text.rstrip()}\n"
    paths["markdown"] = out / "tournament.md"
    paths["markdown"].write_text(md, encoding="utf-8")
    paths["html"] = out / "report.html"
    paths["html"].write_text(
        report_html(
            result,
            title=title,
            heatmap=paths["heatmap"],
            panel=paths["policies_plot"],
            sections=sections,
            images=images,
        ),  # fmt: skip
        encoding="utf-8",
    )
    paths["json"] = out / "results.json"
    paths["json"].write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    paths["samples"] = out / "samples.jsonl"
    with paths["samples"].open("w", encoding="utf-8") as f:
        for record in result.sample_records():
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return paths
