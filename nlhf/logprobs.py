"""Log-probabilities of completion tokens under a causal LM (THEORY.md Sec. 0, 4, 5, 6).

Every loss in :mod:`nlhf.losses` is a pure function of the numbers made here, so the two
conventions below are the whole contract between models and losses.

Alignment (the one place where an off-by-one would hide)
---------------------------------------------------------
A causal LM's ``logits[:, t]`` is the distribution of the *next* token, ``input_ids[:, t + 1]``.
:func:`token_logps` therefore returns ``T - 1`` positions::

    out[b, t] = log softmax(logits[b, t] / temperature)[input_ids[b, t + 1]]   if completion_mask[b, t + 1]
    out[b, t] = 0                                                              otherwise

so position ``t`` of the output scores token ``t + 1`` of the input, and the mask that goes
with the output is ``completion_mask[:, 1:]`` (pass that to :func:`seq_logps` and to the
per-token losses). The logits of the last position are never read. ``completion_mask``
marks completion (response) tokens only, so no prompt token ever counts; its first column
must be 0, because token 0 has no context to be scored from.

Masks come from lengths (:func:`completion_mask_from_lengths`), never from
``input_ids != pad``: with SmolLM2's tokenizer ``pad == eos``, and that test would drop the
real end-of-sequence token, which the policy must learn to emit.

Sum or mean
-----------
:func:`seq_logps` takes the reduction as a required argument. ``"sum"`` gives the sequence
log-probability log pi(y | x) of THEORY.md; ``"mean"`` gives the per-token average
(length-normalised), which changes what ``tau`` means for IPO (THEORY.md Sec. 5; see
:func:`nlhf.losses.pairwise.ipo_loss`).

Memory
------
The log-softmax is never materialised as a (B, T, V) tensor: :func:`token_logps` computes
``logit[target] - logsumexp(logits)`` one chunk of at most ``chunk_tokens`` positions of one
row at a time (in float32 at least, whatever the logits' dtype), skips positions outside
each row's completion span, saves only the per-position logsumexp (B, T) for backward, and
recomputes the softmax chunk by chunk in backward, writing a single (B, T, V) gradient.
Compared with ``log_softmax(logits / temperature).gather(...)`` this saves one (B, T, V)
activation (two with a temperature, three for bf16 logits upcast to float32).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Elements of one float32 working chunk (chunk_tokens x V): 16M elements = 64 MiB.
_CHUNK_ELEMENTS = 1 << 24


class _CompletionLogSoftmax(torch.autograd.Function):
    """log softmax(logits[b, t] / temperature)[targets[b, t]] for t in each row's span.

    Shapes: logits (B, T, V) (all T positions; the last one is never read), targets (B, T-1),
    spans: list of (lo, hi) per row, positions lo <= t < hi of the output are computed
    (others are 0). Output (B, T-1) in float32 (float64 for float64 logits).
    """

    @staticmethod
    def forward(ctx, logits, targets, spans, temperature, chunk_tokens):
        B, T, V = logits.shape
        compute_dtype = torch.promote_types(logits.dtype, torch.float32)
        ctx.spans = spans
        ctx.temperature = temperature
        ctx.chunk_tokens = chunk_tokens
        ctx.whole = B * (T - 1) <= chunk_tokens  # small enough for one chunk: no per-row Python loop
        if ctx.whole:
            inside = _span_mask(spans, T - 1, logits.device)  # (B, T-1)
            x = logits[:, :-1].to(compute_dtype)  # (B, T-1, V)
            if temperature != 1.0:
                x = x / temperature
            zero = torch.zeros((), dtype=compute_dtype, device=logits.device)
            lse = torch.where(inside, torch.logsumexp(x, dim=-1), zero)  # (B, T-1)
            out = torch.where(inside, x.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse, zero)  # (B, T-1)
            ctx.save_for_backward(logits, targets, lse)
            return out
        out = logits.new_zeros((B, T - 1), dtype=compute_dtype)  # (B, T-1)
        lse = logits.new_zeros((B, T - 1), dtype=compute_dtype)  # (B, T-1)
        for b, (lo, hi) in enumerate(spans):
            for t0 in range(lo, hi, chunk_tokens):
                t1 = min(hi, t0 + chunk_tokens)
                x = logits[b, t0:t1].to(compute_dtype)  # (c, V)
                if temperature != 1.0:
                    x = x / temperature
                row_lse = torch.logsumexp(x, dim=-1)  # (c,)
                picked = x.gather(-1, targets[b, t0:t1].unsqueeze(-1)).squeeze(-1)  # (c,)
                lse[b, t0:t1] = row_lse
                out[b, t0:t1] = picked - row_lse
        ctx.save_for_backward(logits, targets, lse)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        # d out[b,t] / d logits[b,t,:] = (onehot(target) - softmax(logits[b,t] / temperature)) / temperature
        logits, targets, lse = ctx.saved_tensors
        temperature = ctx.temperature
        grad = torch.zeros_like(logits, memory_format=torch.contiguous_format)  # (B, T, V)
        if ctx.whole:
            inside = _span_mask(ctx.spans, logits.shape[1] - 1, logits.device)  # (B, T-1)
            x = logits[:, :-1].to(lse.dtype)  # (B, T-1, V)
            if temperature != 1.0:
                x = x / temperature
            zero = torch.zeros((), dtype=lse.dtype, device=lse.device)
            g = torch.where(inside, grad_out.to(lse.dtype), zero)  # (B, T-1)
            # positions outside the spans are never read (they may hold anything, even NaN)
            softmax = torch.where(inside.unsqueeze(-1), torch.exp(x - lse.unsqueeze(-1)), zero)  # (B, T-1, V)
            chunk = softmax * (-g).unsqueeze(-1)  # (B, T-1, V)
            chunk.scatter_add_(-1, targets.unsqueeze(-1), g.unsqueeze(-1))
            if temperature != 1.0:
                chunk = chunk / temperature
            grad[:, :-1] = chunk.to(grad.dtype)
            return grad, None, None, None, None
        for b, (lo, hi) in enumerate(ctx.spans):
            for t0 in range(lo, hi, ctx.chunk_tokens):
                t1 = min(hi, t0 + ctx.chunk_tokens)
                x = logits[b, t0:t1].to(lse.dtype)  # (c, V)
                if temperature != 1.0:
                    x = x / temperature
                g = grad_out[b, t0:t1].to(lse.dtype)  # (c,)
                chunk = torch.exp(x - lse[b, t0:t1].unsqueeze(-1)) * (-g).unsqueeze(-1)  # (c, V)
                chunk.scatter_add_(-1, targets[b, t0:t1].unsqueeze(-1), g.unsqueeze(-1))
                if temperature != 1.0:
                    chunk = chunk / temperature
                grad[b, t0:t1] = chunk.to(grad.dtype)
        return grad, None, None, None, None


def _span_mask(spans: list[tuple[int, int]], n: int, device: torch.device) -> Tensor:
    """(B, n) bool: position t of row b lies in that row's span [lo, hi)."""
    pos = torch.arange(n, device=device)  # (n,)
    lo = torch.tensor([a for a, _ in spans], device=device).unsqueeze(1)  # (B, 1)
    hi = torch.tensor([c for _, c in spans], device=device).unsqueeze(1)  # (B, 1)
    return (pos >= lo) & (pos < hi)


def completion_mask_from_lengths(completion_start: Tensor, completion_length: Tensor, seq_len: int) -> Tensor:
    """Boolean (B, T) mask of completion tokens, built from lengths (never from ``ids != pad``).

    ``mask[b, t] = completion_start[b] <= t < completion_start[b] + completion_length[b]``.
    For a right-padded batch ``completion_start`` is the prompt length; for a left-padded
    prompt it is the padded prompt width (the same for every row). ``completion_length``
    counts the completion tokens including the EOS token when one was produced.
    Shapes: completion_start (B,), completion_length (B,) integer tensors.
    """
    completion_start = torch.as_tensor(completion_start)
    completion_length = torch.as_tensor(completion_length, device=completion_start.device)
    if completion_start.dim() != 1 or completion_start.shape != completion_length.shape:
        raise ValueError(
            "completion_mask_from_lengths: completion_start and completion_length must be (B,) tensors of the "
            f"same shape, got {tuple(completion_start.shape)} and {tuple(completion_length.shape)}"
        )
    bad = (completion_start < 0) | (completion_length < 0) | (completion_start + completion_length > seq_len)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"completion_mask_from_lengths: rows {rows} have a negative start/length or end past seq_len={seq_len}"
        )
    positions = torch.arange(seq_len, device=completion_start.device)  # (T,)
    start = completion_start.unsqueeze(-1)  # (B, 1)
    return (positions >= start) & (positions < start + completion_length.unsqueeze(-1))  # (B, T)


def token_logps(
    logits: Tensor,
    input_ids: Tensor,
    completion_mask: Tensor,
    temperature: float = 1.0,
    chunk_tokens: int | None = None,
) -> Tensor:
    """Log-probability of each completion token given its prefix, aligned to the next token.

    ``out[b, t] = log softmax(logits[b, t] / temperature)[input_ids[b, t + 1]]`` where
    ``completion_mask[b, t + 1]`` is true, and 0 elsewhere (see the module docstring). The
    mask for the result is ``completion_mask[:, 1:]``.

    Args:
        logits: (B, T, V) model output for ``input_ids`` (any float dtype; the result is float32,
            or float64 for float64 logits). The last position is never read.
        input_ids: (B, T) token ids, prompt then completion, padded anyhow.
        completion_mask: (B, T) bool/0-1, true on completion tokens only (build it from lengths
            with :func:`completion_mask_from_lengths`). Column 0 must be false.
        temperature: the distribution scored is softmax(logits / temperature). Use 1 for the
            policy being trained (THEORY.md Sec. 4: the policy-gradient estimators are about
            pi_theta itself); use the sampler's temperature to get the sampling distribution's
            log-probs (``sampling_logps`` of :func:`nlhf.losses.nash.nash_md_pg_loss`).
            Top-k/top-p truncation is not applied here; the sampler records those log-probs.
        chunk_tokens: positions per working chunk (default: as many as fit 16M float32 elements).

    Returns:
        (B, T-1) log-probs, differentiable with respect to ``logits``; exactly 0 (with zero
        gradient) outside the completion.
    """
    if logits.dim() != 3:
        raise ValueError(f"token_logps: logits must be (B, T, V), got shape {tuple(logits.shape)}")
    B, T, V = logits.shape
    if tuple(input_ids.shape) != (B, T) or tuple(completion_mask.shape) != (B, T):
        raise ValueError(
            f"token_logps: input_ids {tuple(input_ids.shape)} and completion_mask {tuple(completion_mask.shape)} "
            f"must both be (B, T) = {(B, T)} to match logits {tuple(logits.shape)}"
        )
    if T < 2:
        raise ValueError(
            f"token_logps: need at least 2 positions (a prompt token and a completion token), got T={T}"
        )
    if not temperature > 0:
        raise ValueError(f"token_logps: temperature must be > 0, got {temperature}")
    mask = completion_mask.to(torch.bool)  # (B, T)
    if bool(mask[:, 0].any()):
        rows = mask[:, 0].nonzero().flatten().tolist()
        raise ValueError(
            f"token_logps: completion_mask[:, 0] is set in rows {rows}; the first token has no context and "
            "cannot be scored (a completion needs at least one prompt token before it)"
        )
    targets = input_ids[:, 1:].long()  # (B, T-1)
    target_mask = mask[:, 1:]  # (B, T-1)
    bad = target_mask & ((targets < 0) | (targets >= V))
    if bool(bad.any()):
        b, t = bad.nonzero()[0].tolist()
        raise ValueError(
            f"token_logps: completion token id {int(targets[b, t])} at row {b}, position {t + 1} is outside "
            f"the vocabulary of size {V}"
        )
    safe_targets = torch.where(target_mask, targets, torch.zeros_like(targets))  # (B, T-1)

    # Each row's span [lo, hi) of output positions that hold completion tokens (one sync).
    positions = torch.arange(T - 1, device=logits.device)  # (T-1,)
    lo = torch.where(target_mask, positions, T - 1).min(dim=-1).values  # (B,)
    hi = torch.where(target_mask, positions + 1, 0).max(dim=-1).values  # (B,)
    spans = [(int(a), int(c)) if c > a else (0, 0) for a, c in zip(lo.tolist(), hi.tolist())]
    if chunk_tokens is None:
        chunk_tokens = max(1, _CHUNK_ELEMENTS // V)
    if chunk_tokens < 1:
        raise ValueError(f"token_logps: chunk_tokens must be >= 1, got {chunk_tokens}")

    out = _CompletionLogSoftmax.apply(logits, safe_targets, spans, float(temperature), int(chunk_tokens))
    return torch.where(target_mask, out, torch.zeros_like(out))  # (B, T-1)


def seq_logps(token_logps: Tensor, mask: Tensor, reduction: str) -> Tensor:
    """Sequence log-probability of each completion: sum or mean of its token log-probs.

    ``reduction="sum"``: log pi(y | x) = sum_t mask[b, t] * token_logps[b, t] (THEORY.md Sec. 0:
    the quantity in h, the KL and the policy gradients). ``reduction="mean"``: the same divided
    by the number of completion tokens (length-normalised; TRL's IPO). There is no default:
    the choice changes the meaning of tau (THEORY.md Sec. 5-6).

    Args:
        token_logps: (B, N) per-token log-probs (N = T-1 from :func:`token_logps`).
        mask: (B, N) completion mask aligned with ``token_logps``, i.e. ``completion_mask[:, 1:]``.
        reduction: ``"sum"`` or ``"mean"``.

    Returns:
        (B,) sequence log-probs.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"seq_logps: reduction must be 'sum' or 'mean', got {reduction!r}")
    if token_logps.shape != mask.shape:
        raise ValueError(
            f"seq_logps: token_logps {tuple(token_logps.shape)} and mask {tuple(mask.shape)} differ; the mask for "
            "token_logps(logits, input_ids, completion_mask) is completion_mask[:, 1:]"
        )
    keep = mask.to(torch.bool)  # (B, N)
    total = torch.where(
        keep, token_logps, torch.zeros((), dtype=token_logps.dtype, device=token_logps.device)
    )
    total = total.sum(dim=-1)  # (B,)
    if reduction == "sum":
        return total
    count = keep.sum(dim=-1)  # (B,)
    if bool((count == 0).any()):
        rows = (count == 0).nonzero().flatten().tolist()
        raise ValueError(f"seq_logps: reduction='mean' of an empty completion (rows {rows})")
    return total / count
