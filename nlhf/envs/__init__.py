"""Environments with a known truth: prompt sets plus a programmatic oracle P*(y > y' | x).

Issue 6, THEORY.md Sec. 7. Every trained policy can be scored by the truth, not only by a
learned model::

    from nlhf.envs import default_rater_population, load_env_prompts, Annotator
    env = default_rater_population()           # the cyclic environment (a Judge)
    prompts = load_env_prompts("train")        # 152 built-in questions (48 held out)
    env.prob(xs, ys, ys2)                      # P*(y > y' | x), (B,) float32
    env.class_distribution(xs, ys)             # a policy's class mix, (4,)
    env.exploitability(xs, ys)                 # exact, at the class level (nlhf.lab)
    pairs = Annotator(env, seed=0).pairs_from_samples(xs, samples)  # Bernoulli(P*) labels

* :mod:`nlhf.envs.features`   response classes (structured, personal, direct, unfocused)
* :mod:`nlhf.envs.oracles`    :class:`RaterPopulation` (Condorcet cycle), :class:`BradleyTerryEnv`
* :mod:`nlhf.envs.annotator`  :class:`Annotator`: Bernoulli labels, preference pairs
* :mod:`nlhf.envs.analysis`   exact class-level Nash, pi*_tau, RLHF optimum, exploitability
* :mod:`nlhf.envs.game_judge` :class:`GameJudge`: a lab game over single-token responses
* :mod:`nlhf.envs.prompts`    the built-in prompt set and its train / held-out split
"""

from nlhf.envs.analysis import environment_summary, fit_bradley_terry
from nlhf.envs.annotator import Annotator
from nlhf.envs.features import (
    CLASSES,
    ResponseFeatures,
    class_distribution,
    classify,
    response_class,
    response_features,
)
from nlhf.envs.game_judge import GameJudge
from nlhf.envs.oracles import (
    DEFAULT_BT_SCORES,
    DEFAULT_RATERS,
    BradleyTerryEnv,
    ClassPreferenceJudge,
    RaterPopulation,
    RaterType,
    default_bradley_terry,
    default_rater_population,
    majority_cycles,
    population_game,
)
from nlhf.envs.prompts import load_env_prompts

__all__ = [
    "CLASSES",
    "DEFAULT_BT_SCORES",
    "DEFAULT_RATERS",
    "Annotator",
    "BradleyTerryEnv",
    "ClassPreferenceJudge",
    "GameJudge",
    "RaterPopulation",
    "RaterType",
    "ResponseFeatures",
    "class_distribution",
    "classify",
    "default_bradley_terry",
    "default_rater_population",
    "environment_summary",
    "fit_bradley_terry",
    "load_env_prompts",
    "majority_cycles",
    "population_game",
    "response_class",
    "response_features",
]
