"""Two-token responses: the mixture sampler's sequence distribution against exact enumeration (issue 5).

Model: two random Llamas with a 6-token vocabulary (EOS = 2), one layer, whose output
weights are scaled by 20 so the next-token distributions are sharp and depend on the
context. With ``max_new_tokens = 2`` a response is either (EOS,) or (a, b) with a != EOS:
1 + 5 * 6 = 31 outcomes, all enumerable. Exact distributions (float64, by teacher forcing):

* pi, mu: the policy's and reference's sequence probabilities;
* token-level mixture (what Nash-MD samples, THEORY.md Sec. 4):
  q(y) = prod_n softmax((1 - beta) logits_pi + beta logits_mu)[y_n] given x, y_<n;
* sequence-level mixture (NOT what Nash-MD samples): pi(y)^(1-beta) mu(y)^beta / Z.

Test: Pearson chi-square goodness of fit on 20,000 samples, cells with expected count < 5
pooled into one. A sampler is ACCEPTED when p > 1e-3 (a correct sampler fails with
probability 1e-3; the seeds are fixed, so the outcome is deterministic) and REJECTED when
p < 1e-3. Negative controls: the correct sampler's samples are rejected against the
sequence-level mixture, and a shared-cache sampler (TRL 1.13 with transformers 5) is
rejected against the token-level mixture.
"""

import pytest
import torch
from sampling_reference import shared_cache_mixture
from scipy.stats import chisquare

from nlhf.models.tiny import tiny_causal_lm
from nlhf.sampling import SamplingConfig, make_generator, sample_mixture, sample_policy_and_mixture

torch.set_num_threads(1)

V, EOS = 6, 2
PROMPT = [1, 3, 4]
N = 20_000
BETA = 0.5
THRESHOLD = 1e-3
OUTCOMES = [(EOS,)] + [(a, b) for a in range(V) if a != EOS for b in range(V)]


def _sharp_tiny_llama(seed):
    model = tiny_causal_lm(vocab_size=V, hidden_size=16, num_layers=1, num_heads=2, seed=seed)
    model.config.eos_token_id = model.config.pad_token_id = EOS
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = EOS
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model


@pytest.fixture(scope="module")
def models():
    return _sharp_tiny_llama(0), _sharp_tiny_llama(1)


@torch.no_grad()
def _next_logps(model, contexts):
    ids = torch.tensor(contexts)
    return torch.log_softmax(model(input_ids=ids).logits[:, -1].double(), dim=-1)  # (n, V)


@pytest.fixture(scope="module")
def exact(models):
    """Exact probabilities of the 31 outcomes: pi, the token-level and the sequence-level mixture."""
    policy, ref = models

    def per_step(model):
        return _next_logps(model, [PROMPT])[0], _next_logps(
            model, [PROMPT + [a] for a in range(V)]
        )  # (V,), (V, V)

    (p1, p2), (r1, r2) = per_step(policy), per_step(ref)
    m1 = torch.log_softmax((1 - BETA) * p1 + BETA * r1, dim=-1)  # (V,)
    m2 = torch.log_softmax((1 - BETA) * p2 + BETA * r2, dim=-1)  # (V, V)

    def seq_logp(first, second, y):
        return first[y[0]] + (second[y[0], y[1]] if len(y) == 2 else 0.0)

    log_pi = torch.stack([seq_logp(p1, p2, y) for y in OUTCOMES])
    log_mu = torch.stack([seq_logp(r1, r2, y) for y in OUTCOMES])
    token_level = torch.stack([seq_logp(m1, m2, y) for y in OUTCOMES]).exp()
    sequence_level = torch.softmax((1 - BETA) * log_pi + BETA * log_mu, dim=0)
    return {"pi": log_pi.exp(), "token": token_level, "sequence": sequence_level}


def _counts(response_ids):
    """Outcome counts (31,) of responses (n, R <= 2); positions after an EOS are ignored."""
    ids = torch.nn.functional.pad(response_ids, (0, 2 - response_ids.shape[1]), value=EOS)  # (n, 2)
    first, second = ids[:, 0], ids[:, 1]
    rank = first - (first > EOS).long()  # index of `first` among the 5 non-EOS tokens
    index = torch.where(first == EOS, torch.zeros_like(first), 1 + rank * V + second)
    return torch.bincount(index, minlength=len(OUTCOMES)).double()


def _p_value(counts, probs):
    """Pearson chi-square p-value of counts against probs, pooling cells with expected count < 5."""
    expected = probs * counts.sum()
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum().view(1)]) if small.any() else counts
    exp = torch.cat([expected[~small], expected[small].sum().view(1)]) if small.any() else expected
    return float(chisquare(obs.numpy(), exp.numpy() * float(obs.sum() / exp.sum())).pvalue)


def _prompts(n):
    ids = torch.tensor([PROMPT]).repeat(n, 1)
    return ids, torch.ones_like(ids)


def test_the_three_distributions_genuinely_differ(exact):
    assert abs(float(exact["token"].sum()) - 1) < 1e-12 and abs(float(exact["pi"].sum()) - 1) < 1e-12
    tv = 0.5 * float((exact["token"] - exact["sequence"]).abs().sum())
    assert tv > 0.1, tv  # the sequence-level control is far from what must be sampled
    assert 0.5 * float((exact["token"] - exact["pi"]).abs().sum()) > 0.1


def test_mixture_sampler_matches_the_token_level_mixture_not_the_sequence_level(models, exact):
    policy, ref = models
    ids, mask = _prompts(N)
    ro = sample_mixture(policy, ref, ids, mask, BETA, SamplingConfig(max_new_tokens=2), make_generator(1))
    counts = _counts(ro.response_ids)
    assert counts.sum() == N
    assert _p_value(counts, exact["token"]) > THRESHOLD
    assert _p_value(counts, exact["sequence"]) < THRESHOLD  # negative control


def test_policy_and_mixture_pair_match_pi_and_the_token_level_mixture(models, exact):
    policy, ref = models
    ids, mask = _prompts(N)
    y, y_mix = sample_policy_and_mixture(
        policy, ref, ids, mask, BETA, SamplingConfig(max_new_tokens=2), make_generator(2)
    )
    assert _p_value(_counts(y.response_ids), exact["pi"]) > THRESHOLD
    mix_counts = _counts(y_mix.response_ids)
    assert _p_value(mix_counts, exact["token"]) > THRESHOLD
    assert _p_value(mix_counts, exact["sequence"]) < THRESHOLD  # negative control


def test_a_shared_cache_sampler_is_detected(models, exact):
    """Negative control: policy and reference appending to ONE cache (TRL 1.13 + transformers 5)."""
    policy, ref = models
    ids, mask = _prompts(N)
    tokens, cache_length = shared_cache_mixture(policy, ref, ids, mask, BETA, 2, make_generator(3), EOS)
    assert cache_length == 2 * (len(PROMPT) + 1)  # the cache really is shared by the two models
    assert _p_value(_counts(tokens), exact["token"]) < THRESHOLD
