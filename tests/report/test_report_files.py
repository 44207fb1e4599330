"""write_report: the files, a self-contained HTML page, the markdown subset; and headless Chromium."""

import base64
import json
import os
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest

from nlhf.eval import TournamentConfig, TournamentResult
from nlhf.report import write_report
from nlhf.report.html import data_uri, markdown_to_html

CHROMIUM = "/usr/bin/chromium"


def make_result() -> TournamentResult:
    """Three policies, 2 prompts x 2 samples; numbers chosen by hand (not a real run)."""
    nan = float("nan")
    win = np.array([[0.5, 0.7, 0.4], [0.3, 0.5, 0.6], [0.6, 0.4, 0.5]])
    low = np.array([[nan, 0.55, 0.25], [0.15, nan, 0.45], [0.45, 0.25, nan]])
    return TournamentResult(
        names=["reference", "nash-md", "rlhf <b>"],
        win_rate=win,
        wins=np.array([[0, 3, 2], [1, 0, 3], [2, 1, 0]]),
        n_games=4 * (1 - np.eye(3, dtype=int)),
        win_low=low,
        win_high=np.where(np.isnan(low), nan, low + 0.3),
        kl=np.array([0.0, 0.42, 1.3]),
        kl_se=np.array([0.0, 0.05, 0.2]),
        mean_length=np.array([30.0, 28.5, 40.25]),
        truncated=np.array([0.5, 0.25, 1.0]),
        exploitability=np.array([0.1, 0.02, 0.15]),
        exploit_low=np.array([0.05, 0.0, 0.1]),
        exploit_high=np.array([0.15, 0.05, 0.2]),
        exploitability_method="class_exact",
        class_distribution=np.array([[0.2, 0.2, 0.3, 0.3], [0.3, 0.3, 0.4, 0.0], [1.0, 0.0, 0.0, 0.0]]),
        class_names=("structured", "personal", "direct", "unfocused"),
        judge="rater-population",
        interval="wilson",
        config=TournamentConfig(),
        prompts=["What is 2+2?", "Name a <script>colour</script>"],
        responses=[
            ["4", "four", "red", "blue"],
            ["It is 4.", "4!", "Red.", "Blue."],
            ["- 4", "- four", "- red", "- b"],
        ],
        response_lengths=[[2, 3, 2, 2], [5, 3, 3, 3], [3, 4, 3, 3]],
        reference="reference",
    )


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls, self.tags, self.ids = [], [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for key, value in attrs:
            if key in ("src", "href", "srcset", "poster", "data", "action") and value is not None:
                self.urls.append((tag, key, value))
            if key == "id":
                self.ids.add(value)


def test_report_files_and_self_contained_html(tmp_path):
    result = make_result()
    extra = tmp_path / "extra.png"
    # a real 1x1 PNG for the caller's image
    extra.write_bytes(
        base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
        )
    )
    paths = write_report(result, tmp_path / "out", title="Demo <run>",
                         sections=[("Closing note", "Nash-MD **won**.\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |")],
                         images={"extra figure": extra})  # fmt: skip
    for key in ("heatmap", "policies_plot", "markdown", "html", "json", "samples"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
    assert (
        paths["heatmap"].name == "win_rates.png" and paths["heatmap"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    )
    # markdown: the matrix with intervals, the policy table, the caller's section
    md = paths["markdown"].read_text()
    assert "| **reference** | 0.500 | 0.700 [0.550, 0.850] | 0.400 [0.250, 0.550] |" in md
    assert (
        "| **nash-md** | 0.420 ± 0.050 | 28.5 | 0.25 | 0.020 [0.000, 0.050] | 0.30 | 0.30 | 0.40 | 0.00 |"
        in md
    )
    assert "## Closing note" in md and "Wilson score" in md
    # json: NaN written as null, round trip of the matrix
    data = json.loads(paths["json"].read_text())
    assert data["win_rate"] == result.win_rate.tolist() and data["win_low"][0][0] is None
    assert data["policies"][2]["class_distribution"]["structured"] == 1.0
    assert len(paths["samples"].read_text().splitlines()) == 12
    # html: every src is a data URI, no href at all, no external reference, the tables are there
    page = paths["html"].read_text()
    parser = _Collect()
    parser.feed(page)
    assert [u for u in parser.urls if not (u[1] == "src" and u[2].startswith("data:image/"))] == []
    assert sum(1 for u in parser.urls if u[0] == "img") == 3  # heatmap, policy panel, the caller's image
    assert "script" not in parser.tags and "link" not in parser.tags
    assert "http://" not in page and "https://" not in page
    assert {"win-rates", "policies"} <= parser.ids
    assert "rlhf &lt;b&gt;" in page and "<b>" not in page  # names are escaped
    assert "&lt;script&gt;colour&lt;/script&gt;" in page  # prompts are escaped
    assert "<strong>won</strong>" in page and "<li>one</li>" in page and "<td>2</td>" in page
    assert "Demo &lt;run&gt;" in page


def test_markdown_subset_escapes_and_renders():
    out = markdown_to_html(
        "# Title\n\nA <b>x</b> and `a<b` and **bold** and *it*.\n\n```\n<raw>\n```\n\n- [link](http://x)"
    )
    assert "<h3>Title</h3>" in out
    assert "A &lt;b&gt;x&lt;/b&gt; and <code>a&lt;b</code> and <strong>bold</strong> and <em>it</em>." in out
    assert "<pre>&lt;raw&gt;</pre>" in out
    assert "<a" not in out and "href" not in out  # no links: the page must stay self-contained


def test_missing_image_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.png"):
        write_report(make_result(), tmp_path, images={"x": tmp_path / "nowhere.png"})
    with pytest.raises(ValueError, match=".txt"):
        (tmp_path / "a.txt").write_text("x")
        data_uri(tmp_path / "a.txt")


CHECK_SCRIPT = """<script>window.addEventListener('load', function () {
  var out = document.createElement('pre'); out.id = 'img-check';
  out.textContent = Array.prototype.map.call(document.images, function (im) {
    return im.complete + ':' + im.naturalWidth + 'x' + im.naturalHeight; }).join(' ');
  document.body.appendChild(out); });</script>"""


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (Debian: apt-get install -y chromium)"
)
def test_report_renders_in_headless_chromium(tmp_path):
    """Open the report in headless Chromium: the tables are in the rendered DOM and every image decoded.

    A copy of the page gets a small inline script that, on load, writes each image's
    ``complete:naturalWidxnaturalHeight`` into the DOM; --dump-dom prints the DOM after it ran.
    The win-rate heatmap for 3 policies is 7 x 6 inches at 110 dpi (nlhf.report.figures): 770 x 660 pixels.
    """
    paths = write_report(make_result(), tmp_path / "out")
    check = tmp_path / "out" / "check.html"
    check.write_text(paths["html"].read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    profile = tmp_path / "profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", check.as_uri()]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    dom = out.stdout
    assert out.returncode == 0, out.stderr[-2000:]
    assert '<table id="win-rates">' in dom and '<table id="policies">' in dom
    assert "0.700" in dom and "nash-md" in dom
    start = dom.index('<pre id="img-check">') + len('<pre id="img-check">')
    images = dom[start : dom.index("</pre>", start)].split()
    assert len(images) == 2
    assert images[0] == "true:770x660"
    for entry in images:
        complete, size = entry.split(":")
        width, height = (int(v) for v in size.split("x"))
        assert complete == "true" and width > 100 and height > 100, images
