"""Tests of nlhf.logprobs: alignment, masks, reductions, memory-conscious log-softmax."""

import math

import pytest
import torch

from nlhf.logprobs import completion_mask_from_lengths, seq_logps, token_logps

LN2, LN3 = math.log(2.0), math.log(3.0)
NAN = float("nan")


def _hand_batch():
    """One row, V = 3, ids [0, 2, 1, 2]; the prompt is tokens 0-1, the completion tokens 2-3.

    logits[0] = NaN (it predicts token 1, a prompt token: must never be read)
    logits[1] = [0, ln 2, ln 3]  -> softmax (1/6, 2/6, 3/6); it predicts token 2 = id 1: ln(1/3)
    logits[2] = [ln 3, ln 2, 0]  -> softmax (3/6, 2/6, 1/6); it predicts token 3 = id 2: ln(1/6)
    logits[3] = NaN (the last position predicts nothing)
    """
    logits = torch.tensor([[[NAN] * 3, [0.0, LN2, LN3], [LN3, LN2, 0.0], [NAN] * 3]], dtype=torch.float64)
    ids = torch.tensor([[0, 2, 1, 2]])
    mask = torch.tensor([[0, 0, 1, 1]], dtype=torch.bool)
    return logits, ids, mask


def test_token_logps_hand_values_and_alignment():
    """out[t] scores token t+1: out = [0 (token 1 is prompt), ln(1/3), ln(1/6)] = [0, -1.098612, -1.791759]."""
    logits, ids, mask = _hand_batch()
    out = token_logps(logits, ids, mask)
    assert out.shape == (1, 3)
    torch.testing.assert_close(out, torch.tensor([[0.0, -1.0986122887, -1.7917594692]], dtype=torch.float64))
    # sum = ln(1/18) = -2.890372; mean over the 2 completion tokens = -1.445186
    torch.testing.assert_close(
        seq_logps(out, mask[:, 1:], "sum"), torch.tensor([-2.8903717579], dtype=torch.float64)
    )
    torch.testing.assert_close(
        seq_logps(out, mask[:, 1:], reduction="mean"), torch.tensor([-1.4451858789], dtype=torch.float64)
    )


def test_token_logps_temperature_hand_value():
    """At temperature 2, logits [0, ln 2, ln 3] give p proportional to (1, sqrt 2, sqrt 3):
    p(id 2) = 1.732051 / 4.146264 = 0.417738, ln = -0.872902. The other token: id 1 at position 2
    (logits [ln 3, ln 2, 0] / 2): sqrt(2) / 4.146264 = 0.341081, ln = -1.075634."""
    logits, ids, mask = _hand_batch()
    ids = torch.tensor([[0, 2, 2, 1]])
    out = token_logps(logits, ids, mask, temperature=2.0)
    torch.testing.assert_close(out, torch.tensor([[0.0, -0.8729016327, -1.0756341868]], dtype=torch.float64))


def test_token_logps_hand_gradient():
    """d ln p(id 1) / d logits[1] = onehot(1) - softmax = (-1/6, 2/3, -1/2); 0 at every other position.
    At temperature 2 the gradient is (onehot - softmax(logits / 2)) / 2."""
    logits, ids, mask = _hand_batch()
    logits.requires_grad_(True)
    out = token_logps(logits, ids, mask)
    out[0, 1].backward()
    expected = torch.zeros(1, 4, 3, dtype=torch.float64)
    expected[0, 1] = torch.tensor([-1 / 6, 2 / 3, -1 / 2], dtype=torch.float64)
    torch.testing.assert_close(logits.grad, expected)

    logits.grad = None
    token_logps(logits, ids, mask, temperature=2.0)[0, 1].backward()
    p = torch.tensor([1.0, math.sqrt(2), math.sqrt(3)], dtype=torch.float64)
    p = p / p.sum()
    expected[0, 1] = (torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64) - p) / 2
    torch.testing.assert_close(logits.grad, expected)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logps_matches_log_softmax_and_gradcheck(temperature):
    """Against the plain reference log_softmax(logits / T)[:, :-1].gather(ids[:, 1:]) * mask[:, 1:],
    with rows whose completions start and end at different places, and tiny chunks."""
    g = torch.Generator().manual_seed(0)
    B, T, V = 3, 7, 11
    logits = torch.randn(B, T, V, dtype=torch.float64, generator=g, requires_grad=True)
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = completion_mask_from_lengths(torch.tensor([2, 3, 1]), torch.tensor([5, 2, 5]), T)
    ref = torch.log_softmax(logits[:, :-1] / temperature, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    ref = ref * mask[:, 1:]
    out = token_logps(logits, ids, mask, temperature, chunk_tokens=2)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    (ref * torch.arange(1.0, 7.0, dtype=torch.float64)).sum().backward()
    ref_grad = logits.grad.clone()
    logits.grad = None
    (out * torch.arange(1.0, 7.0, dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(logits.grad, ref_grad, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda x: token_logps(x, ids, mask, temperature, chunk_tokens=3), (logits,)
    )


def test_token_logps_bf16_is_computed_in_float32():
    """bf16 logits give float32 log-probs equal (to float32 rounding) to a float64 computation on the
    same bf16 values; a bf16 log_softmax would be off by ~1e-2 at these magnitudes."""
    g = torch.Generator().manual_seed(1)
    logits = (4 * torch.randn(2, 6, 50, generator=g)).to(torch.bfloat16)
    ids = torch.randint(0, 50, (2, 6), generator=g)
    mask = completion_mask_from_lengths(torch.tensor([1, 2]), torch.tensor([5, 3]), 6)
    out = token_logps(logits, ids, mask)
    assert out.dtype == torch.float32
    ref = (
        torch.log_softmax(logits.double()[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1) * mask[:, 1:]
    )
    assert (out.double() - ref).abs().max() < 1e-5


def test_no_prompt_token_ever_counts():
    """Changing prompt tokens' ids (other than the last prompt token, which conditions nothing here
    because logits are given) and the logits that predict prompt tokens changes nothing, and those
    logits get zero gradient. Row 0 has a 3-token prompt, row 1 a 1-token prompt."""
    g = torch.Generator().manual_seed(2)
    B, T, V = 2, 6, 5
    logits = torch.randn(B, T, V, dtype=torch.float64, generator=g, requires_grad=True)
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = completion_mask_from_lengths(torch.tensor([3, 1]), torch.tensor([3, 4]), T)
    out = token_logps(logits, ids, mask)
    assert out[0, :2].eq(0).all() and out[1, 4:].eq(0).all()  # prompt of row 0, padding of row 1
    logits2 = logits.detach().clone()
    logits2[0, :2] = 100.0  # predict prompt tokens 1, 2 of row 0
    logits2[1, 4:] = -100.0  # position 4 predicts padding, position 5 predicts nothing
    ids2 = ids.clone()
    ids2[0, :3] = (ids2[0, :3] + 1) % V  # the prompt of row 0
    ids2[1, 5] = (ids2[1, 5] + 1) % V  # the padding of row 1
    torch.testing.assert_close(token_logps(logits2, ids2, mask), out.detach())
    out.sum().backward()
    assert logits.grad[0, :2].eq(0).all() and logits.grad[1, 4:].eq(0).all()
    assert logits.grad[0, 2:5].abs().sum() > 0


def test_completion_mask_from_lengths_hand_values():
    """start (2, 1, 0), length (3, 0, 1), T = 5 -> rows 00111 / 00000 / 10000."""
    mask = completion_mask_from_lengths(torch.tensor([2, 1, 0]), torch.tensor([3, 0, 1]), 5)
    assert mask.tolist() == [[0, 0, 1, 1, 1], [0, 0, 0, 0, 0], [1, 0, 0, 0, 0]]
    with pytest.raises(ValueError, match=r"rows \[0\]"):
        completion_mask_from_lengths(torch.tensor([3]), torch.tensor([3]), 5)


def test_masks_from_lengths_with_pad_equal_eos():
    """With the tiny tokenizer pad == eos == <|im_end|> (id 2). A right-padded batch of two chat
    completions: the mask from lengths keeps each completion's final <|im_end|> and drops the
    padding, while ``ids != pad`` would drop the EOS (and the prompt's own <|im_end|>). The short
    row's sequence log-prob in the padded batch equals its value computed alone."""
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    tok = tiny_tokenizer()
    assert tok.pad_token_id == tok.eos_token_id == 2
    model = tiny_causal_lm(tokenizer=tok)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=True
    )["input_ids"]
    completions = [
        tok("Yo<|im_end|>", add_special_tokens=False)["input_ids"],
        tok("A longer one<|im_end|>", add_special_tokens=False)["input_ids"],
    ]
    assert completions[0] == [59, 81, 2]
    rows = [prompt + c for c in completions]
    T = max(len(r) for r in rows)
    ids = torch.tensor([r + [tok.pad_token_id] * (T - len(r)) for r in rows])  # (2, T)
    lengths = torch.tensor([len(c) for c in completions])
    mask = completion_mask_from_lengths(torch.full((2,), len(prompt)), lengths, T)  # (2, T)
    assert mask.sum(-1).tolist() == [3, 13]
    assert ids[0][mask[0]].tolist() == [59, 81, 2]  # the EOS counts
    naive = (ids != tok.pad_token_id) & (torch.arange(T) >= len(prompt))
    assert naive.sum(-1).tolist() == [2, 12]  # ids != pad loses the EOS of both rows
    attention = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits  # (2, T, V)
        batched = seq_logps(token_logps(logits, ids, mask), mask[:, 1:], "sum")
        alone_ids = ids[:1, : len(rows[0])]
        alone_logits = model(input_ids=alone_ids).logits
        alone_mask = mask[:1, : len(rows[0])]
        alone = seq_logps(token_logps(alone_logits, alone_ids, alone_mask), alone_mask[:, 1:], "sum")
    torch.testing.assert_close(batched[0], alone[0], rtol=1e-5, atol=1e-5)
    # and it is the sum of exactly the 3 completion tokens' log-probs
    lp = torch.log_softmax(alone_logits[0].double(), -1)
    start = len(prompt)
    direct = sum(lp[start - 1 + i, completions[0][i]] for i in range(3))
    assert abs(float(alone[0]) - float(direct)) < 1e-5


def test_errors_are_explicit():
    logits, ids, mask = _hand_batch()
    with pytest.raises(ValueError, match=r"completion_mask\[:, 0\].*rows \[0\]"):
        token_logps(logits, ids, torch.ones_like(mask))
    with pytest.raises(ValueError, match="must both be"):
        token_logps(logits, ids[:, :3], mask)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        token_logps(logits, torch.tensor([[0, 2, 7, 2]]), mask)
    with pytest.raises(ValueError, match="temperature"):
        token_logps(logits, ids, mask, temperature=0.0)
    out = token_logps(logits, ids, mask)
    with pytest.raises(ValueError, match="'sum' or 'mean'"):
        seq_logps(out, mask[:, 1:], "avg")
    with pytest.raises(TypeError):
        seq_logps(out, mask[:, 1:])  # the reduction is required
    with pytest.raises(ValueError, match=r"completion_mask\[:, 1:\]"):
        seq_logps(out, mask, "sum")
    empty = torch.zeros(2, 3, dtype=torch.bool)
    empty[0, 1] = True
    with pytest.raises(ValueError, match=r"empty completion \(rows \[1\]\)"):
        seq_logps(torch.zeros(2, 3), empty, "mean")
    assert seq_logps(torch.ones(2, 3), empty, "sum").tolist() == [1.0, 0.0]
