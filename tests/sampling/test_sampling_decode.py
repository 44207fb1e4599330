"""The KV-cached decode loop (nlhf.sampling.generate) against full recomputation and transformers."""

import pytest
import torch
from sampling_reference import uncached_mixture

from nlhf.data.collate import collate_prompts
from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer
from nlhf.sampling import (
    SamplingConfig,
    generate,
    make_generator,
    process_logits,
    response_logps,
    sample_mixture,
)

torch.set_num_threads(1)

PROMPTS = [[1, 72, 101, 108], [1, 87, 104, 97, 116, 32, 105, 115], [1, 65], [1, 79, 107, 32, 110]]
EOS = PAD = 2  # tiny_tokenizer: pad == eos == <|im_end|>, like SmolLM2


@pytest.fixture(scope="module")
def policy():
    return tiny_causal_lm(seed=0, tokenizer=tiny_tokenizer())


@pytest.fixture(scope="module")
def batch():
    return collate_prompts(PROMPTS, pad_token_id=PAD)  # left-padded, width 8


def _on_mask(x, mask):
    return x[mask.bool()]


def test_cached_loop_equals_full_recompute(policy, batch):
    """Same generator seed: same tokens, and every step's logits match a no-cache full forward."""
    cfg = SamplingConfig(max_new_tokens=12, temperature=0.8, top_k=50, top_p=0.95)
    ro = generate(
        policy, batch.input_ids, batch.attention_mask, cfg, make_generator(0), return_step_logits=True
    )
    tokens, lengths, step_logits = uncached_mixture(
        policy, None, batch.input_ids, batch.attention_mask, 0.0, cfg, make_generator(0), EOS, PAD
    )
    assert ro.response_ids.shape == (4, 12) and ro.step_logits.shape == (4, 12, 259)
    assert torch.equal(ro.response_lengths, lengths)
    assert torch.equal(ro.response_ids, tokens)
    torch.testing.assert_close(ro.step_logits, step_logits, atol=2e-5, rtol=1e-5)
    assert torch.equal(ro.prompt_ids, batch.input_ids) and torch.equal(ro.prompt_mask, batch.attention_mask)


def test_left_padded_rows_equal_the_same_rows_alone(policy, batch):
    """top_k = 1 (greedy) so the tokens do not depend on the random stream; logits per step too."""
    cfg = SamplingConfig(max_new_tokens=10, top_k=1)
    together = generate(policy, batch.input_ids, batch.attention_mask, cfg, return_step_logits=True)
    for b, prompt in enumerate(PROMPTS):
        ids = torch.tensor([prompt])
        alone = generate(policy, ids, torch.ones_like(ids), cfg, return_step_logits=True)
        n = int(alone.response_lengths[0])
        assert int(together.response_lengths[b]) == n
        assert together.response_ids[b, :n].tolist() == alone.response_ids[0, :n].tolist()
        torch.testing.assert_close(
            together.step_logits[b, :n], alone.step_logits[0, :n], atol=2e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            together.policy_logps[b, :n], alone.policy_logps[0, :n], atol=2e-5, rtol=1e-5
        )
    assert torch.count_nonzero(together.sampling_logps) == 0  # top_k = 1: log q = log 1


def test_greedy_equals_transformers_generate(policy, batch):
    cfg = SamplingConfig(max_new_tokens=10, top_k=1)
    ro = generate(policy, batch.input_ids, batch.attention_mask, cfg)
    hf = policy.generate(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        do_sample=False,
        max_new_tokens=10,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    assert ro.response_ids.tolist() == hf[:, batch.input_ids.shape[1] :].tolist()


def test_each_row_stops_at_its_own_eos_and_masks_come_from_lengths(policy, batch):
    """Pick as EOS a token some rows sample; pad == eos as in SmolLM2.

    The same generator seed draws the same uniforms per step whether rows are finished or
    not, so before its end each row repeats the run that ignores EOS; after its end it holds
    pad (= eos) with mask 0, and the EOS itself is inside the mask.
    """
    free = generate(
        policy, batch.input_ids, batch.attention_mask, SamplingConfig(max_new_tokens=10, stop_on_eos=False)
    )
    assert bool(free.truncated.all()) and free.response_lengths.tolist() == [10] * 4
    eos = int(free.response_ids[0, 3])
    cfg = SamplingConfig(max_new_tokens=10)
    ro = generate(policy, batch.input_ids, batch.attention_mask, cfg, eos_token_id=eos, pad_token_id=eos)
    expected_lengths, expected_truncated = [], []
    for row in free.response_ids.tolist():
        first = row.index(eos) if eos in row else None
        expected_lengths.append(10 if first is None else first + 1)
        expected_truncated.append(first is None)
    assert expected_lengths[0] <= 4 and min(expected_lengths) < 10  # the test exercises stopping
    assert ro.response_lengths.tolist() == expected_lengths
    assert ro.truncated.tolist() == expected_truncated
    R = max(expected_lengths)
    assert ro.response_ids.shape == (4, R)
    for b, n in enumerate(expected_lengths):
        assert ro.response_ids[b, :n].tolist() == free.response_ids[b, :n].tolist()
        assert ro.response_ids[b, n:].tolist() == [eos] * (R - n)
        assert ro.response_mask[b].tolist() == [1] * n + [0] * (R - n)
        assert ro.sampling_logps[b, n:].abs().sum() == 0 and ro.policy_logps[b, n:].abs().sum() == 0
        if not expected_truncated[b]:
            assert int(ro.response_ids[b, n - 1]) == eos  # the EOS is a real, masked-in token
    # temperature 1, no cut: q is pi
    assert torch.equal(ro.sampling_logps, ro.policy_logps)


def test_deterministic_given_the_generator(policy, batch):
    cfg = SamplingConfig(max_new_tokens=8)
    a = generate(policy, batch.input_ids, batch.attention_mask, cfg, make_generator(5))
    b = generate(policy, batch.input_ids, batch.attention_mask, cfg, make_generator(5))
    c = generate(policy, batch.input_ids, batch.attention_mask, cfg, make_generator(6))
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.sampling_logps, b.sampling_logps)
    assert not torch.equal(a.response_ids, c.response_ids)
    g = make_generator(5)
    first = generate(policy, batch.input_ids, batch.attention_mask, cfg, g)
    second = generate(policy, batch.input_ids, batch.attention_mask, cfg, g)  # the stream moves on
    assert torch.equal(first.response_ids, a.response_ids) and not torch.equal(
        second.response_ids, a.response_ids
    )
    # no generator: seeded from cfg.seed
    d = generate(policy, batch.input_ids, batch.attention_mask, SamplingConfig(max_new_tokens=8, seed=5))
    assert torch.equal(d.response_ids, a.response_ids)


def test_recorded_logps_match_scoring_and_the_sampling_distribution(policy, batch):
    """policy_logps (temperature 1) = a trainer's forward; sampling_logps = log q of the processed logits."""
    cfg = SamplingConfig(max_new_tokens=12, temperature=0.7, top_k=20)
    ro = generate(
        policy, batch.input_ids, batch.attention_mask, cfg, make_generator(1), return_step_logits=True
    )
    mask = ro.response_mask
    scored = response_logps(policy, ro)  # (B, R), with gradient
    assert scored.requires_grad and scored.shape == ro.response_ids.shape
    torch.testing.assert_close(
        _on_mask(scored.detach(), mask), _on_mask(ro.policy_logps, mask), atol=2e-5, rtol=1e-5
    )
    assert scored.detach()[~mask.bool()].abs().sum() == 0
    logq = torch.log_softmax(process_logits(ro.step_logits.flatten(0, 1), 0.7, 20, 1.0), dim=-1)
    logq = logq.gather(-1, ro.response_ids.flatten()[:, None]).view_as(ro.response_ids)
    torch.testing.assert_close(_on_mask(logq, mask), _on_mask(ro.sampling_logps, mask))
    # temperature 0.7 sharpens: log q > log pi for the likely tokens actually drawn, on average
    assert float(_on_mask(ro.sampling_logps - ro.policy_logps, mask).mean()) > 0
    # scoring at the sampling temperature (no top-k) is log softmax(logits / 0.7)
    scored_t = response_logps(policy, ro, temperature=0.7).detach()
    expected_t = (
        torch.log_softmax(ro.step_logits / 0.7, dim=-1).gather(-1, ro.response_ids[..., None]).squeeze(-1)
    )
    torch.testing.assert_close(_on_mask(scored_t, mask), _on_mask(expected_t, mask), atol=2e-5, rtol=1e-5)


def test_training_flags_restored_and_no_graph(policy, batch):
    policy.train()
    try:
        ro = generate(policy, batch.input_ids, batch.attention_mask, SamplingConfig(max_new_tokens=3))
        assert policy.training and all(m.training for m in policy.modules())
    finally:
        policy.eval()
    assert not ro.sampling_logps.requires_grad and not ro.policy_logps.requires_grad


def test_rollout_helpers(policy, batch):
    tok = tiny_tokenizer()
    ro = generate(policy, batch.input_ids, batch.attention_mask, SamplingConfig(max_new_tokens=5, top_k=1))
    ids, attn, comp = ro.sequences()
    assert ids.shape == attn.shape == comp.shape == (4, 8 + ro.response_ids.shape[1])
    assert comp[:, :8].sum() == 0 and torch.equal(comp[:, 8:], ro.response_mask.bool())
    texts = ro.response_texts(tok)
    assert texts[0] == tok.decode(ro.response_ids[0, : int(ro.response_lengths[0])], skip_special_tokens=True)
    assert ro.to("cpu").response_ids is not None


def test_bad_inputs_are_refused_with_the_row(policy, batch):
    cfg = SamplingConfig(max_new_tokens=2)
    right_padded = torch.tensor([[1, 1, 0], [1, 1, 1]])
    with pytest.raises(ValueError, match=r"rows \[0\] are not left-padded"):
        generate(policy, torch.ones(2, 3, dtype=torch.long), right_padded, cfg)
    with pytest.raises(ValueError, match=r"rows \[1\] have no tokens"):
        generate(policy, torch.ones(2, 3, dtype=torch.long), torch.tensor([[0, 1, 1], [0, 0, 0]]), cfg)
    with pytest.raises(ValueError, match="mixture_coef must be in"):
        sample_mixture(policy, policy, batch.input_ids, batch.attention_mask, 1.5, cfg)
    no_eos = tiny_causal_lm(seed=0)
    no_eos.config.eos_token_id = None
    no_eos.generation_config.eos_token_id = None
    with pytest.raises(ValueError, match="no EOS id is known"):
        generate(no_eos, batch.input_ids, batch.attention_mask, cfg)
    # ... unless it is given, or stopping is off
    assert (
        generate(no_eos, batch.input_ids, batch.attention_mask, cfg, eos_token_id=EOS).response_ids.shape[0]
        == 4
    )


def test_repeated_prompts_are_prefilled_once(policy, monkeypatch):
    """Rows repeating a prompt share one prefill; the cache copy gives the same samples and logits.

    Batch [p0, p1, p0, p2, p1] (left-padded): the prefill forward must see the 3 distinct
    rows only, and the rollout (tokens, per-step logits, log-probs) must equal the one with
    the de-duplication switched off (every row prefilled), same RowGenerator seeds.
    """
    import nlhf.sampling.decode as decode

    rows = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[1]]
    b = collate_prompts(rows, pad_token_id=PAD)
    cfg = SamplingConfig(max_new_tokens=8)
    seen: list[int] = []
    real_forward = decode.CachedLM._forward

    def counting(self, input_ids, position_ids, attention_mask=None):
        seen.append(int(input_ids.shape[0]))
        return real_forward(self, input_ids, position_ids, attention_mask)

    monkeypatch.setattr(decode.CachedLM, "_forward", counting)
    shared = generate(
        policy, b.input_ids, b.attention_mask, cfg, decode.RowGenerator(range(5)), return_step_logits=True
    )
    assert seen[0] == 3 and set(seen[1:]) == {5}  # prefill on 3 distinct rows, then every row steps
    seen.clear()
    import nlhf.sampling.cached_lm as cached_lm

    monkeypatch.setattr(cached_lm, "distinct_rows", lambda ids, mask: (None, None))
    alone = generate(
        policy, b.input_ids, b.attention_mask, cfg, decode.RowGenerator(range(5)), return_step_logits=True
    )
    assert seen[0] == 5
    assert torch.equal(shared.response_ids, alone.response_ids)
    torch.testing.assert_close(shared.step_logits, alone.step_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared.policy_logps, alone.policy_logps, atol=1e-5, rtol=1e-5)
    # the rows of a repeated prompt start from the same distribution
    torch.testing.assert_close(shared.step_logits[0, 0], shared.step_logits[2, 0])


def test_distinct_rows_ignore_pad_ids_but_not_positions():
    """Same tokens under the mask -> one row; a different pad id is ignored; a shifted prompt is another row."""
    from nlhf.sampling.cached_lm import distinct_rows as _distinct_rows

    ids = torch.tensor([[0, 5, 6], [1, 2, 3], [9, 5, 6], [5, 6, 0], [1, 2, 3]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 1, 1], [1, 1, 0], [1, 1, 1]])
    first, inverse = _distinct_rows(ids, mask)
    assert first.tolist() == [0, 1, 3] and inverse.tolist() == [0, 1, 0, 2, 1]
    assert _distinct_rows(ids[:2], mask[:2]) == (None, None)
