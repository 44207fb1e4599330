"""Evaluation: the round-robin tournament of policies under a judge, and its report (issue 6).

::

    from nlhf.eval import TournamentConfig, load_policy, run_tournament
    from nlhf.report import write_report
    from nlhf.envs import default_rater_population, load_env_prompts
    policies = [load_policy("smollm2", name="reference"), load_policy("runs/nash-md")]
    result = run_tournament(policies, load_env_prompts("heldout"), default_rater_population(),
                            TournamentConfig(samples_per_prompt=2), reference=policies[0])
    paths = write_report(result, "runs/eval")   # win_rates.png, tournament.md, report.html, results.json

* :mod:`nlhf.eval.config`      :class:`TournamentConfig`
* :mod:`nlhf.eval.policies`    :class:`PolicyEntry`, :func:`load_policy` (run dirs, saved policies, names)
* :mod:`nlhf.eval.tournament`  :func:`run_tournament`: what every number means (win rates with
  Wilson / Clopper-Pearson intervals, Monte Carlo KL(pi || mu) with its standard error,
  exploitability: exact at the class level for class oracles, else pool / best-of-n), a
  straight line over its stages in :mod:`nlhf.eval.samples` (sampling, KL) and
  :mod:`nlhf.eval.exploitability`
* :mod:`nlhf.eval.intervals`   binomial and bootstrap intervals
* :mod:`nlhf.eval.result`      :class:`TournamentResult` (``to_dict``, ``to_markdown``)
* the report of a result: :func:`nlhf.report.write_report` (heatmap PNG, markdown, self-contained
  HTML, JSON); :mod:`nlhf.report` imports this package, never the reverse
* :mod:`nlhf.eval.cli`         ``nlhf eval``

Importing this package is cheap: names load on first use; torch and matplotlib only when
a tournament runs or a report is drawn.
"""

from __future__ import annotations

from nlhf._lazy import lazy_exports

_EXPORTS = {
    "TournamentConfig": "nlhf.eval.config",
    "PolicyEntry": "nlhf.eval.policies",
    "load_policy": "nlhf.eval.policies",
    "TournamentResult": "nlhf.eval.result",
    "run_tournament": "nlhf.eval.tournament",
    "is_class_judge": "nlhf.eval.tournament",
    "wilson_interval": "nlhf.eval.intervals",
    "clopper_pearson_interval": "nlhf.eval.intervals",
    "binomial_interval": "nlhf.eval.intervals",
    "bootstrap_interval": "nlhf.eval.intervals",
}

__all__ = sorted(_EXPORTS)  # the names are declared once, in _EXPORTS

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
