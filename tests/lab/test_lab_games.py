"""Preference games: constructors give the matrices worked out by hand; bad matrices are refused."""

import numpy as np
import pytest

from nlhf.lab import (
    PreferenceGame,
    bradley_terry,
    nontransitive_dice,
    random_game,
    rater_population,
    rock_paper_scissors,
)


def test_rock_paper_scissors_matrix():
    """Paper beats rock, scissors beat paper, rock beats scissors, each surely."""
    g = rock_paper_scissors()
    assert g.names == ("rock", "paper", "scissors")
    assert g.P[1, 0] == 1.0 and g.P[2, 1] == 1.0 and g.P[0, 2] == 1.0
    assert g.P[0, 1] == 0.0 and np.all(np.diag(g.P) == 0.5)
    np.testing.assert_array_equal(g.A, -g.A.T)


def test_nontransitive_dice_from_faces():
    """Dice (2,2,4,4,9,9), (1,1,6,6,8,8), (3,3,5,5,7,7): counting the 36 face pairs,

    die0 vs die1: 2 beats {1,1} (2 pairs x 2 faces = 4), 4 beats {1,1} (4), 9 beats all (12):
    20/36 = 5/9. die1 vs die2: 6 beats {3,3,5,5} (8), 8 beats all (12): 20/36. die2 vs die0:
    3 beats {2,2} (4), 5 beats {2,2,4,4} (8), 7 beats {2,2,4,4} (8): 20/36. No ties.
    """
    g = nontransitive_dice()
    assert g.P[0, 1] == pytest.approx(5 / 9, abs=1e-15)
    assert g.P[1, 2] == pytest.approx(5 / 9, abs=1e-15)
    assert g.P[2, 0] == pytest.approx(5 / 9, abs=1e-15)
    assert g.P[1, 0] == pytest.approx(4 / 9, abs=1e-15)


def test_dice_split_ties():
    """Faces (1, 2) vs (2, 3): pairs (1,2) L, (1,3) L, (2,2) tie, (2,3) L -> 0.5/4 = 1/8."""
    g = nontransitive_dice(((1, 2), (2, 3)))
    assert g.P[0, 1] == pytest.approx(1 / 8)
    assert g.P[1, 0] == pytest.approx(7 / 8)


def test_rater_population_condorcet_cycle():
    """Equal raters a>b>c, b>c>a, c>a>b: a is above b for raters 1 and 3, so P(a > b) = 2/3, etc."""
    g = rater_population([(0, 1, 2), (1, 2, 0), (2, 0, 1)])
    assert g.P[0, 1] == pytest.approx(2 / 3)
    assert g.P[1, 2] == pytest.approx(2 / 3)
    assert g.P[2, 0] == pytest.approx(2 / 3)


def test_rater_population_weights():
    """Weights (0.4, 0.35, 0.25): P(a > b) = w0 + w2 = 0.65, P(b > c) = w0 + w1 = 0.75, P(c > a) = 0.6."""
    g = rater_population([(0, 1, 2), (1, 2, 0), (2, 0, 1)], [4, 3.5, 2.5])  # normalised inside
    assert g.P[0, 1] == pytest.approx(0.65)
    assert g.P[1, 2] == pytest.approx(0.75)
    assert g.P[2, 0] == pytest.approx(0.60)


def test_bradley_terry_and_random_games():
    g = bradley_terry([0.0, np.log(3.0)])
    assert g.P[1, 0] == pytest.approx(0.75)  # sigmoid(log 3) = 3/4
    t = random_game(30, seed=4, kind="tournament")
    off = t.P[~np.eye(30, dtype=bool)]
    assert set(np.unique(off)) == {0.0, 1.0}
    u1, u2 = random_game(20, seed=1), random_game(20, seed=1)
    np.testing.assert_array_equal(u1.P, u2.P)
    np.testing.assert_allclose(u1.P + u1.P.T, 1.0, atol=0)


@pytest.mark.parametrize(
    "P, message",
    [
        ([[0.5, 0.2, 0.3]], r"square"),
        ([[0.5, 1.2], [-0.2, 0.5]], r"P\[0, 1\] = 1.2 is not a probability"),
        ([[0.5, 0.7], [0.4, 0.5]], r"P\[0, 1\] = 0.7 and P\[1, 0\] = 0.4 sum to 1.1"),
        ([[0.5, 0.5], [0.5, 0.3]], r"P\[1, 1\] = 0.3 .*must be 1/2"),
        ([[0.5, np.nan], [0.5, 0.5]], r"P\[0, 1\] = nan is not a finite number"),
    ],
)
def test_invalid_games_are_rejected_naming_the_entry(P, message):
    with pytest.raises(ValueError, match=message):
        PreferenceGame(P)


def test_invalid_constructor_inputs():
    with pytest.raises(ValueError, match=r"rankings\[1\] = \[0, 0, 2\] is not a permutation"):
        rater_population([(0, 1, 2), (0, 0, 2)])
    with pytest.raises(ValueError, match=r"weights\[1\] = -1.0 must be"):
        rater_population([(0, 1), (1, 0)], [1.0, -1.0])
    with pytest.raises(ValueError, match="kind must be"):
        random_game(3, kind="normal")
    with pytest.raises(ValueError, match="names: got 2 names"):
        PreferenceGame(np.full((3, 3), 0.5), names=("a", "b"))
