"""The pure functions of nlhf.sampling: logits processing, the mixture formula, the token draw."""

import math

import pytest
import torch
from scipy.stats import chisquare

from nlhf.config import ConfigError
from nlhf.sampling import (
    SamplingConfig,
    make_generator,
    mixture_logits,
    position_ids_from_mask,
    process_logits,
    sample_tokens,
)

torch.set_num_threads(1)


def _probs(logits):
    return torch.softmax(logits, dim=-1)


def test_top_p_keeps_the_smallest_set_reaching_top_p():
    """probs (0.2, 0.4, 0.1, 0.3): ranked 0.4 (id 1), 0.3 (id 3), 0.2 (id 0), 0.1 (id 2).

    top_p = 0.65: the first two hold 0.7 >= 0.65, so id 0 (0.7 ranked above it) is dropped:
    kept {1, 3}, renormalised (4/7, 3/7). top_p = 0.75: 0.7 < 0.75, so id 0 stays, id 2 (0.9
    above it) goes: (2/9, 4/9, 0, 3/9).
    """
    logits = torch.tensor([[0.2, 0.4, 0.1, 0.3]]).log()
    got = _probs(process_logits(logits, top_p=0.65))
    torch.testing.assert_close(got, torch.tensor([[0.0, 4 / 7, 0.0, 3 / 7]]))
    got = _probs(process_logits(logits, top_p=0.75))
    torch.testing.assert_close(got, torch.tensor([[2 / 9, 4 / 9, 0.0, 3 / 9]]))
    # a tiny top_p keeps the most likely token only
    assert _probs(process_logits(logits, top_p=1e-6)).tolist() == [[0.0, 1.0, 0.0, 0.0]]


def test_top_k_keeps_ties_and_temperature_divides():
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0]])
    got = process_logits(logits, top_k=2)  # the 2nd largest is 3.0: both 3.0s kept
    assert torch.isinf(got[0, [0, 2]]).all() and got[0, [1, 3]].tolist() == [3.0, 3.0]
    got = process_logits(logits, top_k=3)
    assert torch.isinf(got[0, 0]) and got[0, 1:].tolist() == [3.0, 2.0, 3.0]
    assert process_logits(logits, top_k=4).tolist() == logits.tolist()  # k >= V: no cut
    assert process_logits(torch.tensor([[2.0, 4.0]]), temperature=2.0).tolist() == [[1.0, 2.0]]


def test_order_is_temperature_then_top_k_then_top_p():
    """logits 2 log(0.4, 0.3, 0.2, 0.1) at temperature 2 are log(0.4, 0.3, 0.2, 0.1).

    top_k = 2 first: (4/7, 3/7, 0, 0); then top_p = 0.5: 4/7 >= 0.5 is ranked above id 1, so
    only id 0 is left. (top_p first would keep ids 0 and 1: 0.4 < 0.5.)
    """
    logits = 2 * torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
    got = _probs(process_logits(logits, temperature=2.0, top_k=2, top_p=0.5))
    assert got.tolist() == [[1.0, 0.0, 0.0, 0.0]]
    got = _probs(process_logits(logits, temperature=2.0, top_k=3))
    torch.testing.assert_close(got, torch.tensor([[4 / 9, 3 / 9, 2 / 9, 0.0]]))


def test_mixture_logits_is_the_normalised_geometric_mixture():
    """pi = (1/2, 1/2), mu = (9/10, 1/10), beta = 1/2: sqrt(pi mu) = (sqrt .45, sqrt .05) = 3:1 -> (3/4, 1/4)."""
    log_pi = torch.tensor([[0.5, 0.5]]).log()
    log_mu = torch.tensor([[0.9, 0.1]]).log()
    torch.testing.assert_close(_probs(mixture_logits(log_pi, log_mu, 0.5)), torch.tensor([[0.75, 0.25]]))
    # raw logits or log-softmaxes: the same distribution (per-model constants cancel)
    torch.testing.assert_close(
        _probs(mixture_logits(log_pi + 7.0, log_mu - 3.0, 0.5)), torch.tensor([[0.75, 0.25]])
    )
    # beta = 1/4: pi^(3/4) mu^(1/4) = (0.5^.75 0.9^.25, 0.5^.75 0.1^.25), normalised
    a, b = 0.9**0.25, 0.1**0.25
    torch.testing.assert_close(
        _probs(mixture_logits(log_pi, log_mu, 0.25)), torch.tensor([[a / (a + b), b / (a + b)]])
    )


def test_mixture_logits_ends_are_exact_even_with_minus_inf():
    policy = torch.tensor([[0.0, float("-inf"), 1.5]])
    ref = torch.tensor([[float("-inf"), 2.0, -1.0]])
    assert torch.equal(mixture_logits(policy, ref, 0.0), policy)
    assert torch.equal(mixture_logits(policy, ref, 1.0), ref)
    with pytest.raises(ValueError, match="share one vocabulary"):
        mixture_logits(policy, ref[:, :2], 0.5)


def test_sample_tokens_is_the_inverse_cdf_of_one_uniform_per_row():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(3))
    tokens, logq = sample_tokens(logits, make_generator(11))
    u = torch.rand((5, 1), generator=make_generator(11), dtype=torch.float64)
    cdf = torch.softmax(logits.double(), dim=-1).cumsum(-1)
    expected = (cdf <= u * cdf[:, -1:]).sum(-1)  # first index whose cdf exceeds u
    assert tokens.tolist() == expected.tolist()
    torch.testing.assert_close(logq, torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1))


def test_sample_tokens_never_draws_a_zero_probability_token_and_matches_frequencies():
    inf = float("-inf")
    logits = torch.tensor([[inf, 0.0, inf, 0.0, inf]]).repeat(4000, 1)
    tokens, logq = sample_tokens(logits, make_generator(0))
    assert set(tokens.tolist()) == {1, 3}
    assert torch.allclose(logq, torch.full_like(logq, -math.log(2)))
    # 40,000 draws from (0.1, 0.2, 0.3, 0.4): chi-square goodness of fit (false rejection rate 1e-3)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    tokens, _ = sample_tokens(probs.log().float().repeat(40_000, 1), make_generator(1))
    counts = torch.bincount(tokens, minlength=4).double()
    assert chisquare(counts.numpy(), (40_000 * probs).numpy()).pvalue > 1e-3
    # ... and it rejects a wrong distribution
    wrong = torch.tensor([0.11, 0.19, 0.3, 0.4], dtype=torch.float64)
    assert chisquare(counts.numpy(), (40_000 * wrong).numpy()).pvalue < 1e-3


def test_position_ids_count_from_the_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[1, 1, 0, 1, 2], [0, 1, 2, 3, 4]]


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"temperature": 0.0}, "sampling.temperature"),
        ({"top_p": 0.0}, "sampling.top_p"),
        ({"top_p": 1.5}, "sampling.top_p"),
        ({"top_k": -1}, "sampling.top_k"),
        ({"max_new_tokens": 0}, "sampling.max_new_tokens"),
    ],
)
def test_sampling_config_rejects_bad_values_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        SamplingConfig(**kwargs)


def test_sampling_config_is_exact_only_at_temperature_one_without_cuts():
    assert SamplingConfig().is_exact
    assert not SamplingConfig(temperature=0.9).is_exact
    assert not SamplingConfig(top_k=50).is_exact
    assert not SamplingConfig(top_p=0.95).is_exact


def test_importing_the_package_and_its_types_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; import nlhf.sampling; from nlhf.sampling import SamplingConfig, Rollout, Sampler; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
