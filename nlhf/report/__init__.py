"""Reports of evaluations: a win-rate heatmap, a markdown table and a self-contained HTML page.

:func:`write_report` (:mod:`nlhf.report.writer`) writes, into one directory,
``win_rates.png``, ``tournament.md``, ``report.html`` (CSS inline, every image embedded as
a base64 data URI: no file or network reference, it opens anywhere), ``results.json`` and
``samples.jsonl``. matplotlib loads only when a figure is drawn.
"""

from __future__ import annotations

from typing import Any


def write_report(*args: Any, **kwargs: Any) -> Any:
    """See :func:`nlhf.report.writer.write_report`."""
    from nlhf.report.writer import write_report as _write_report

    return _write_report(*args, **kwargs)


__all__ = ["write_report"]
