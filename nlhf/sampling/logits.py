"""Pure functions of logits: position ids, the geometric mixture, temperature / top-k / top-p, sampling a token.

Plain PyTorch, no model: what one step of the decode loop (:mod:`nlhf.sampling.decode`) does
to the next-token logits. The token-level geometric mixture (Nash-MD's opponent, THEORY.md
Sec. 4) is :func:`mixture_logits`; :func:`process_logits` applies the sampling settings;
:func:`sample_tokens` draws one token per row by inverse CDF from a ``torch.Generator`` or
the rows' own streams (:class:`nlhf.sampling.streams.RowStream`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nlhf.sampling.streams import RowStream


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """(B, T) position ids counted from each row's first attended token (left padding).

    ``pos[b, t] = (number of attended tokens in row b up to and including t) - 1``; masked
    positions get 1 (never read; the convention of transformers' ``generate``).
    """
    mask = attention_mask.long()  # (B, T)
    positions = mask.cumsum(dim=-1) - 1  # (B, T)
    return positions.masked_fill(mask == 0, 1)


def mixture_logits(policy_logits: Tensor, ref_logits: Tensor, mixture_coef: float) -> Tensor:
    """Logits of the token-level geometric mixture: (1 - beta) logits_pi + beta logits_mu.

    THEORY.md Sec. 4 (NLHF Eq. 3 applied per token, the opponent of Nash-MD-PG):
    pi'(y_n | x, y_<n) proportional to pi(y_n | .)^(1 - beta) mu(y_n | .)^beta, i.e. the softmax
    of these logits (mixing raw logits or log-softmaxes gives the same distribution).
    ``beta = 0`` returns the policy's logits and ``beta = 1`` the reference's, exactly (so a
    -inf logit of the unused model cannot turn into NaN). Shapes: (..., V) -> (..., V) float32.
    """
    if policy_logits.shape != ref_logits.shape:
        raise ValueError(
            f"mixture_logits: policy logits {tuple(policy_logits.shape)} and reference logits "
            f"{tuple(ref_logits.shape)} differ; the two models must share one vocabulary"
        )
    beta = float(mixture_coef)
    if beta == 0.0:
        return policy_logits.float()
    if beta == 1.0:
        return ref_logits.float()
    return (1.0 - beta) * policy_logits.float() + beta * ref_logits.float()


def process_logits(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Logits of the distribution actually sampled: temperature, then top-k, then top-p.

    * temperature: ``logits / temperature``;
    * top-k (``0 < top_k < V``): logits below the k-th largest become -inf (ties with the
      k-th value are kept);
    * top-p (``top_p < 1``): keep the smallest set of most likely tokens whose probability
      (after the steps above) sums to at least ``top_p``: a token is dropped when the
      tokens ranked above it already hold ``top_p``. The most likely token is always kept.

    Shapes: (B, V) -> (B, V) float32, -inf on dropped tokens.
    """
    x = logits.float()  # (B, V)
    if temperature != 1.0:
        x = x / temperature
    V = x.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(x, top_k, dim=-1).values[..., -1:]  # (B, 1)
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)  # (B, V)
        probs = torch.softmax(sorted_x, dim=-1)  # (B, V)
        mass_before = torch.cumsum(probs, dim=-1) - probs  # (B, V) mass of the tokens ranked above
        drop_sorted = mass_before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # (B, V) back to vocab order
        x = x.masked_fill(drop, float("-inf"))
    return x


def sample_tokens(logits: Tensor, generator: torch.Generator | RowStream) -> tuple[Tensor, Tensor]:
    """Draw one token per row from softmax(logits) by inverse CDF; return it and its log-prob.

    Uses exactly one uniform per row from ``generator`` (a ``torch.Generator``, on its
    device, or a :class:`RowStream`: row b's next uniform of its own stream), so the random
    stream consumed does not depend on the vocabulary or on the logits. A token with
    probability 0 (-inf logit) is never drawn.

    Args:
        logits: (B, V), e.g. from :func:`process_logits`.
        generator: the caller's ``torch.Generator``, or a :class:`RowStream` of B rows.

    Returns:
        tokens (B,) long and log q(token) (B,) float32, q = softmax(logits).
    """
    B, V = logits.shape
    logq = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
    probs = logq.double().exp()  # (B, V)
    cdf = torch.cumsum(probs, dim=-1)  # (B, V)
    if isinstance(generator, RowStream):
        u = generator.next_uniforms(B).unsqueeze(-1)  # (B, 1)
    else:
        u = torch.rand((B, 1), generator=generator, device=generator.device, dtype=torch.float64)  # (B, 1)
    u = u.to(logits.device)
    tokens = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1)  # (B,)
    # u * total can round up to total: fall back to the last token of positive probability
    last_positive = V - 1 - torch.argmax((probs > 0).flip(-1).to(torch.int8), dim=-1)  # (B,)
    tokens = torch.minimum(tokens, last_positive)
    return tokens, logq.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def token_logps_at(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits)[token] per row, at temperature 1. (B, V), (B,) -> (B,) float32."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


__all__ = ["mixture_logits", "position_ids_from_mask", "process_logits", "sample_tokens", "token_logps_at"]
