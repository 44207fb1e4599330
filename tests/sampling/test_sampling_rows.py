"""Per-row random streams (nlhf.sampling.decode.RowGenerator): a row's sample does not depend on its batch.

This is what makes an online trainer's samples, hence its parameters, the same with 1
process x micro-batch 2b as with 2 processes x b: each prompt row draws from its own
counter-based stream, seeded by its global position.
"""

import pytest
import torch

from nlhf.data.collate import collate_prompts
from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer
from nlhf.sampling import SamplingConfig, generate, make_generator, sample_mixture, sample_policy_and_mixture
from nlhf.sampling.logits import sample_tokens
from nlhf.sampling.streams import RowGenerator, RowStream, counter_uniforms, splitmix64

torch.set_num_threads(1)

# prompts of unequal lengths: each batch is left-padded to its own width
PROMPTS = [[1, 72, 101, 108], [1, 87, 104, 97, 116, 32, 105, 115], [1, 65], [1, 79, 107, 32, 110, 111, 33]]
SEEDS = [11, 12, 13, 14]
PAD = EOS = 2
CFG = SamplingConfig(max_new_tokens=40)  # temperature 1: every token is random; rows end at different steps


@pytest.fixture(scope="module")
def models():
    tok = tiny_tokenizer()
    return tiny_causal_lm(seed=0, tokenizer=tok), tiny_causal_lm(seed=1, tokenizer=tok)


def batch_of(rows):
    return collate_prompts([PROMPTS[i] for i in rows], pad_token_id=PAD)


def cut(rollout, b):
    """Row b's response tokens and per-token log-probs (up to its own length)."""
    n = int(rollout.response_lengths[b])
    return rollout.response_ids[b, :n].tolist(), rollout.sampling_logps[b, :n]


def test_splitmix64_matches_the_reference_sequence():
    """SplitMix64 seeded 0: the published first outputs 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4."""
    z = splitmix64(
        torch.tensor([0x9E3779B97F4A7C15 - 2**64, 2 * 0x9E3779B97F4A7C15 - 2**64], dtype=torch.int64)
    )
    assert [v % 2**64 for v in z.tolist()] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]
    u = counter_uniforms(torch.tensor([0]), 0, 2)  # the same two draws, top 53 bits
    assert u.tolist() == [[(0xE220A8397B1DCDAF >> 11) * 2.0**-53, (0x6E789E6AA1B965F4 >> 11) * 2.0**-53]]


def test_counter_uniforms_are_uniform_and_blocks_agree():
    u = counter_uniforms(torch.arange(2000), 0, 500)  # (2000, 500): 10^6 draws
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 2e-3  # sd of the mean: 0.29 / 1000
    assert abs(float(u.var()) - 1 / 12) < 1e-3
    hist = torch.histc(u.float(), bins=10, min=0.0, max=1.0) / u.numel()
    assert float((hist - 0.1).abs().max()) < 2e-3
    lag = torch.corrcoef(torch.stack([u[:, :-1].flatten(), u[:, 1:].flatten()]))[0, 1]
    assert abs(float(lag)) < 5e-3  # consecutive draws of a stream uncorrelated
    assert torch.equal(
        counter_uniforms(torch.arange(5), 7, 3), counter_uniforms(torch.arange(5), 0, 10)[:, 7:]
    )
    stream = RowStream(torch.arange(5))
    drawn = torch.stack([stream.next_uniforms(5) for _ in range(70)], dim=1)  # crosses two 32-draw blocks
    assert torch.equal(drawn, counter_uniforms(torch.arange(5), 0, 70))


@pytest.mark.parametrize("split", [[[0, 1, 2, 3]], [[0, 1], [2, 3]], [[2], [0, 3], [1]], [[3, 2, 1, 0]]])
def test_generate_rows_do_not_depend_on_their_batch(models, split):
    """Rows 0..3 in one batch, in two batches of 2, in other orders: identical tokens per row."""
    policy, _ = models
    whole = generate(policy, batch_of([0, 1, 2, 3]).input_ids, batch_of([0, 1, 2, 3]).attention_mask, CFG,
                     RowGenerator(SEEDS), eos_token_id=EOS)  # fmt: skip
    lengths = whole.response_lengths.tolist()
    assert len(set(lengths)) > 1 and max(lengths) > 3  # rows end at different steps: a real test
    for rows in split:
        b = batch_of(rows)
        part = generate(policy, b.input_ids, b.attention_mask, CFG, RowGenerator([SEEDS[i] for i in rows]),
                        eos_token_id=EOS)  # fmt: skip
        for j, i in enumerate(rows):
            tokens, logq = cut(part, j)
            want_tokens, want_logq = cut(whole, i)
            assert tokens == want_tokens, (rows, i)
            torch.testing.assert_close(logq, want_logq, atol=2e-5, rtol=1e-5)


def test_a_torch_generator_is_not_batch_invariant(models):
    """Negative control: one torch.Generator hands out uniforms in row order, so splitting changes rows 2, 3."""
    policy, _ = models
    b = batch_of([0, 1, 2, 3])
    whole = generate(policy, b.input_ids, b.attention_mask, CFG, make_generator(5), eos_token_id=EOS)
    tail = batch_of([2, 3])
    part = generate(policy, tail.input_ids, tail.attention_mask, CFG, make_generator(5), eos_token_id=EOS)
    assert [cut(part, j)[0] for j in range(2)] != [cut(whole, i)[0] for i in (2, 3)]


def test_mixture_and_nash_pair_rows_do_not_depend_on_their_batch(models):
    policy, ref = models
    full = batch_of([0, 1, 2, 3])
    mix = sample_mixture(
        policy, ref, full.input_ids, full.attention_mask, 0.5, CFG, RowGenerator(SEEDS), eos_token_id=EOS
    )
    y, y_mix = sample_policy_and_mixture(policy, ref, full.input_ids, full.attention_mask, 0.25, CFG,
                                         RowGenerator(SEEDS), eos_token_id=EOS)  # fmt: skip
    for rows in ([0, 1], [2, 3]):
        b = batch_of(rows)
        seeds = [SEEDS[i] for i in rows]
        part = sample_mixture(
            policy, ref, b.input_ids, b.attention_mask, 0.5, CFG, RowGenerator(seeds), eos_token_id=EOS
        )
        py, pmix = sample_policy_and_mixture(policy, ref, b.input_ids, b.attention_mask, 0.25, CFG,
                                             RowGenerator(seeds), eos_token_id=EOS)  # fmt: skip
        for j, i in enumerate(rows):
            assert cut(part, j)[0] == cut(mix, i)[0]
            assert cut(py, j)[0] == cut(y, i)[0]
            assert cut(pmix, j)[0] == cut(y_mix, i)[0]
    # y and y' of a prompt come from two different streams (not the same uniforms)
    assert [cut(y, i)[0] for i in range(4)] != [cut(y_mix, i)[0] for i in range(4)]


def test_successive_calls_and_copies_are_independent_streams(models):
    """Two calls on one RowGenerator differ (like a torch.Generator); the same call from a fresh one repeats.

    ``tile`` (block-major) and ``repeat_interleave`` (prompt-major) give copy j of prompt b the same stream.
    """
    policy, _ = models
    b = batch_of([0, 1, 2, 3])
    gen = RowGenerator(SEEDS)
    first = generate(policy, b.input_ids, b.attention_mask, CFG, gen, eos_token_id=EOS)
    second = generate(policy, b.input_ids, b.attention_mask, CFG, gen, eos_token_id=EOS)
    again = generate(policy, b.input_ids, b.attention_mask, CFG, RowGenerator(SEEDS), eos_token_id=EOS)
    assert torch.equal(first.response_ids, again.response_ids)
    assert first.response_ids.tolist() != second.response_ids.tolist()

    tiled, inter = RowGenerator(SEEDS).tile(3), RowGenerator(SEEDS).repeat_interleave(3)
    assert len(tiled) == len(inter) == 12 and len(set(tiled.seeds.tolist())) == 12
    assert sorted(tiled.seeds.tolist()) == sorted(inter.seeds.tolist())
    for i in range(4):
        for j in range(3):
            assert tiled.seeds[j * 4 + i] == inter.seeds[i * 3 + j]


def test_row_streams_refuse_a_batch_of_another_size(models):
    policy, _ = models
    b = batch_of([0, 1, 2])
    with pytest.raises(ValueError, match="4 row streams for a batch of 3 rows"):
        generate(policy, b.input_ids, b.attention_mask, CFG, RowGenerator(SEEDS), eos_token_id=EOS)
    with pytest.raises(ValueError, match="3 row streams for 2 rows"):
        sample_tokens(torch.zeros(2, 5), RowStream(torch.arange(3)))
