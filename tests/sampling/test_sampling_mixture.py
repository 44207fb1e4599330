"""The token-level geometric mixture sampler (THEORY.md Sec. 4) against the formula and full recomputation."""

import copy

import pytest
import torch
from sampling_reference import uncached_mixture

from nlhf.data.collate import collate_prompts
from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer
from nlhf.sampling import (
    HFSampler,
    Sampler,
    SamplingConfig,
    generate,
    make_generator,
    position_ids_from_mask,
    process_logits,
    response_logps,
    sample_mixture,
    sample_policy_and_mixture,
)

torch.set_num_threads(1)

PROMPTS = [[1, 72, 101, 108], [1, 87, 104, 97, 116, 32, 105, 115], [1, 65], [1, 79, 107, 32, 110]]
EOS = PAD = 2


@pytest.fixture(scope="module")
def models():
    tok = tiny_tokenizer()
    return tiny_causal_lm(seed=0, tokenizer=tok), tiny_causal_lm(seed=1, tokenizer=tok)


@pytest.fixture(scope="module")
def batch():
    return collate_prompts(PROMPTS, pad_token_id=PAD)


def _teacher_forced_logits(model, rollout):
    """(B, R, V): the model's next-token logits before each response token, by one uncached forward."""
    ids, attn, _ = rollout.sequences()
    logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn)).logits
    P, R = rollout.prompt_width, rollout.response_ids.shape[1]
    return logits[:, P - 1 : P - 1 + R].float().detach()


def _on_mask(x, mask):
    return x[mask.bool()]


@pytest.mark.parametrize("beta", [0.3, 0.75])
def test_each_step_samples_the_formula(models, batch, beta):
    """softmax(process((1 - beta) logits_pi + beta logits_mu)) at every step, each model with its own cache.

    Checked two ways: (1) against a sampler with no cache at all (full recompute of both models
    each step, same seed): same tokens, same per-step logits; (2) against one teacher-forced
    forward of each model on the final sequences.
    """
    policy, ref = models
    cfg = SamplingConfig(max_new_tokens=12, temperature=0.9, top_p=0.95)
    ro = sample_mixture(
        policy,
        ref,
        batch.input_ids,
        batch.attention_mask,
        beta,
        cfg,
        make_generator(3),
        return_step_logits=True,
    )
    tokens, lengths, step_logits = uncached_mixture(
        policy, ref, batch.input_ids, batch.attention_mask, beta, cfg, make_generator(3), EOS, PAD
    )
    assert torch.equal(ro.response_lengths, lengths) and torch.equal(ro.response_ids, tokens)
    torch.testing.assert_close(ro.step_logits, step_logits, atol=2e-5, rtol=1e-5)

    mask = ro.response_mask
    formula = (1 - beta) * _teacher_forced_logits(policy, ro) + beta * _teacher_forced_logits(
        ref, ro
    )  # (B, R, V)
    torch.testing.assert_close(_on_mask(ro.step_logits, mask), _on_mask(formula, mask), atol=2e-5, rtol=1e-5)
    logq = torch.log_softmax(process_logits(formula.flatten(0, 1), 0.9, 0, 0.95), dim=-1)
    logq = logq.gather(-1, ro.response_ids.flatten()[:, None]).view_as(ro.response_ids)
    torch.testing.assert_close(_on_mask(ro.sampling_logps, mask), _on_mask(logq, mask), atol=2e-5, rtol=1e-5)
    # log pi and log mu of the mixture's tokens, recorded for free, match a trainer's scoring
    for model, recorded in ((policy, ro.policy_logps), (ref, ro.ref_logps)):
        scored = response_logps(model, ro).detach()
        torch.testing.assert_close(_on_mask(recorded, mask), _on_mask(scored, mask), atol=2e-5, rtol=1e-5)


def test_mixture_coef_0_is_the_policy_and_1_the_reference_exactly(models, batch):
    policy, ref = models
    cfg = SamplingConfig(max_new_tokens=10, temperature=0.8)
    for beta, model in ((0.0, policy), (1.0, ref)):
        mix = sample_mixture(policy, ref, batch.input_ids, batch.attention_mask, beta, cfg, make_generator(7))
        alone = generate(model, batch.input_ids, batch.attention_mask, cfg, make_generator(7))
        assert torch.equal(mix.response_ids, alone.response_ids)
        assert torch.equal(mix.sampling_logps, alone.sampling_logps)
        # the formula itself, computed with both models (no shortcut), gives the same tokens
        tokens, _, _ = uncached_mixture(
            policy, ref, batch.input_ids, batch.attention_mask, beta, cfg, make_generator(7), EOS, PAD
        )
        assert torch.equal(tokens, alone.response_ids)
    only_ref = sample_mixture(policy, ref, batch.input_ids, batch.attention_mask, 1.0, cfg, make_generator(7))
    assert only_ref.policy_logps is None and only_ref.ref_logps is not None
    # and the two models really differ here, so the check above means something
    pol = generate(policy, batch.input_ids, batch.attention_mask, cfg, make_generator(7))
    assert not torch.equal(pol.response_ids, only_ref.response_ids)


def test_ema_opponent_is_the_second_model_at_coef_1(models, batch):
    """Nash-EMA-PG: the opponent is just another model, sampled alone (mixture_coef = 1)."""
    policy, _ = models
    ema = copy.deepcopy(policy)
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.9)
    cfg = SamplingConfig(max_new_tokens=8)
    expected = generate(ema, batch.input_ids, batch.attention_mask, cfg, make_generator(2))
    got = sample_mixture(policy, ema, batch.input_ids, batch.attention_mask, 1.0, cfg, make_generator(2))
    assert torch.equal(got.response_ids, expected.response_ids)
    sampler = HFSampler(policy, policy, cfg, opponent=ema, eos_token_id=EOS, pad_token_id=PAD)
    via_sampler = sampler.sample_opponent(batch, make_generator(2))
    assert torch.equal(via_sampler.response_ids, expected.response_ids)
    assert via_sampler.ref_logps is None  # the opponent's log-probs are not mu's
    with pytest.raises(ValueError, match="no opponent"):
        HFSampler(policy, policy, cfg).sample_opponent(batch, make_generator(2))


def test_policy_and_mixture_from_one_loop(models, batch):
    """y ~ pi with log pi and log mu of its tokens; y' ~ the mixture; from one 2B-row loop."""
    policy, ref = models
    beta = 0.4
    cfg = SamplingConfig(max_new_tokens=12)
    y, y_mix = sample_policy_and_mixture(
        policy,
        ref,
        batch.input_ids,
        batch.attention_mask,
        beta,
        cfg,
        make_generator(4),
        return_step_logits=True,
    )
    assert torch.equal(y.prompt_ids, batch.input_ids) and torch.equal(y_mix.prompt_ids, batch.input_ids)
    pol_y = _teacher_forced_logits(policy, y)
    pol_m, ref_m = _teacher_forced_logits(policy, y_mix), _teacher_forced_logits(ref, y_mix)
    m, mm = y.response_mask, y_mix.response_mask
    torch.testing.assert_close(_on_mask(y.step_logits, m), _on_mask(pol_y, m), atol=2e-5, rtol=1e-5)
    formula = (1 - beta) * pol_m + beta * ref_m
    torch.testing.assert_close(_on_mask(y_mix.step_logits, mm), _on_mask(formula, mm), atol=2e-5, rtol=1e-5)
    # the KL term's log-probs for y, with no extra forward of the reference
    torch.testing.assert_close(
        _on_mask(y.ref_logps, m), _on_mask(response_logps(ref, y).detach(), m), atol=2e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        _on_mask(y.policy_logps, m), _on_mask(response_logps(policy, y).detach(), m), atol=2e-5, rtol=1e-5
    )
    assert torch.equal(y.sampling_logps, y.policy_logps)  # temperature 1, no cut: q = pi
    # y and y' use independent uniforms: not the same responses
    assert not torch.equal(y.response_ids[:, :4], y_mix.response_ids[:, :4])
    # beta = 0 (SelfPlay's pair): both halves sample pi, so y' rows are distributed like y rows;
    # with a deterministic cut (top_k = 1) they coincide exactly
    greedy = SamplingConfig(max_new_tokens=6, top_k=1)
    a, b = sample_policy_and_mixture(policy, ref, batch.input_ids, batch.attention_mask, 0.0, greedy)
    assert torch.equal(a.response_ids, b.response_ids)


def test_hf_sampler_is_a_sampler_and_calls_the_loops(models, batch):
    policy, ref = models
    cfg = SamplingConfig(max_new_tokens=6)
    sampler = HFSampler(policy, ref, cfg, eos_token_id=EOS, pad_token_id=PAD)
    assert isinstance(sampler, Sampler)
    got = sampler.sample(batch, make_generator(9))
    assert torch.equal(
        got.response_ids,
        generate(policy, batch.input_ids, batch.attention_mask, cfg, make_generator(9)).response_ids,
    )
    got = sampler.sample_mixture(batch, 0.5, make_generator(9))
    expected = sample_mixture(policy, ref, batch.input_ids, batch.attention_mask, 0.5, cfg, make_generator(9))
    assert torch.equal(got.response_ids, expected.response_ids)
    y, y_mix = sampler.sample_policy_and_mixture(batch, 0.5, make_generator(9))
    y2, y_mix2 = sample_policy_and_mixture(
        policy, ref, batch.input_ids, batch.attention_mask, 0.5, cfg, make_generator(9)
    )
    assert torch.equal(y.response_ids, y2.response_ids) and torch.equal(
        y_mix.response_ids, y_mix2.response_ids
    )


def test_lora_reference_is_the_base_model_with_the_adapter_off(batch):
    """Sampling through nlhf.models.Reference(adapter_of=peft policy) runs mu, not the adapted pi."""
    from nlhf.models import LoraSettings, build_policy

    base = tiny_causal_lm(seed=0, tokenizer=tiny_tokenizer())
    frozen_base = copy.deepcopy(base)
    policy, reference = build_policy(base, LoraSettings(r=4, target_modules=("q_proj", "v_proj", "o_proj")))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    cfg = SamplingConfig(max_new_tokens=8, top_k=1)
    mu = generate(frozen_base, batch.input_ids, batch.attention_mask, cfg, return_step_logits=True)
    via_ref = generate(reference, batch.input_ids, batch.attention_mask, cfg, return_step_logits=True)
    via_policy = generate(policy, batch.input_ids, batch.attention_mask, cfg, return_step_logits=True)
    assert torch.equal(via_ref.response_ids, mu.response_ids)
    torch.testing.assert_close(via_ref.step_logits, mu.step_logits, atol=2e-5, rtol=1e-5)
    assert not torch.allclose(via_policy.step_logits[:, 0], mu.step_logits[:, 0], atol=1e-3)
    # the mixture with separate caches works when both "models" are one peft module
    ro = sample_mixture(
        policy, reference, batch.input_ids, batch.attention_mask, 0.5, cfg, return_step_logits=True
    )
    formula = 0.5 * _teacher_forced_logits(policy, ro) + 0.5 * _teacher_forced_logits(frozen_base, ro)
    torch.testing.assert_close(
        _on_mask(ro.step_logits, ro.response_mask), _on_mask(formula, ro.response_mask), atol=2e-5, rtol=1e-5
    )
