"""How over-long examples are cut to a token budget, so that both responses always fit.

Two places need a rule: the policy side (prompt + one response, one sequence per response)
and the judge side (prompt + first + second in one sequence for a pairwise preference
model, prompt + response for a reward model). The rule is the same in spirit:

* the **prompt is cut from the left** (its most recent turns, the ones the response
  answers, are kept; a chat template's header is lost first);
* **responses are cut from the right** (their beginnings are kept); a response cut this way
  loses its end-of-turn / EOS token too, since it no longer ends there;
* each segment has its own budget, and the responses are served first, so a long prompt can
  never push a response out.

Policy side (:func:`nlhf.data.collate.tokenize_pair`): fixed per-segment budgets. The
prompt keeps its last ``max_prompt_tokens`` tokens, each response its first
``max_response_tokens`` tokens (end-of-turn token included). Both sequences of a pair share
the same prompt tokens, so a sequence is at most ``max_prompt_tokens + max_response_tokens``.

Judge side (:func:`segment_budgets`, used by :mod:`nlhf.data.judge_inputs`): one shared
budget ``max_tokens`` (the model's ``max_length`` minus the special / separator tokens) for
the prompt and ``k`` responses (``k = 2`` for a triple, 1 for a single):

1. each response is first capped at ``max_response_tokens`` (if given);
2. the prompt is guaranteed ``min(prompt_len, min_prompt_tokens)`` tokens (its floor);
3. the responses share what is left after the floor by *water-filling*: the largest
   per-response level ``s`` with ``sum_i min(r_i, s) <= budget`` (a leftover token goes
   to the longer response; equally long responses get the same length), so a short
   response is never cut and a long one cannot starve the other, and the two orders
   (x, a, b) and (x, b, a) keep the same tokens of each response;
4. the prompt gets everything the responses leave, up to its full length.

So the prompt gives way first (down to its floor), then the longer response. Counting:
each call reports how many tokens it removed from each segment; the collators add them up.

Measured on the HH-RLHF harmless sample (``../shared/data/hh-rlhf-harmless-1700.jsonl.gz``,
1,696 valid pairs) with the all-MiniLM-L6-v2 (BERT) tokenizer, checked by
``tests/data/test_data_hh.py``:

=====================================  ======  ======  ======  =====  =========
sequence                               p50     p90     p99     max    > 512
=====================================  ======  ======  ======  =====  =========
triple ``[CLS] x [SEP] a [SEP] b [SEP]``  161     391     797    1035   76 (4.5 %)
single ``[CLS] x [SEP] y [SEP]``          122     323     662     952   83 (2.4 %)
chosen + rejected raw transcripts         238     636    1312    1719   16.5 %
=====================================  ======  ======  ======  =====  =========

(The "~700 tokens at p90" figure is the two full transcripts together; the triple holds
the shared prompt once.) With ``max_length=512`` and ``min_prompt_tokens=64``, 76 triples
are truncated: 75 lose part of the prompt and only 5 lose part of a response.
"""

from __future__ import annotations

from collections.abc import Sequence


def keep_last(ids: Sequence[int], n: int) -> list[int]:
    """The last ``n`` tokens (cut from the left); all of them when ``n >= len(ids)``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return list(ids[len(ids) - n :]) if n < len(ids) else list(ids)


def keep_first(ids: Sequence[int], n: int) -> list[int]:
    """The first ``n`` tokens (cut from the right)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return list(ids[:n])


def water_fill(lengths: Sequence[int], budget: int) -> list[int]:
    """Per-segment keeps ``k_i <= lengths[i]``, as equal as possible, spending (almost) all of ``budget``.

    ``sum k_i = sum lengths`` when that fits in ``budget``; otherwise ``budget - len(lengths) <
    sum k_i <= budget`` (tokens left over by the rule below stay unused).

    The level is the largest ``s`` with ``sum_i min(l_i, s) <= budget``; leftover tokens
    (fewer than the number of segments still longer than ``s``) go one each to the longest
    segments, except that equally long segments get one only all together (otherwise the
    leftover stays unused). So permuting ``lengths`` permutes the result, and keeps differ
    by at most one.
    """
    if budget < 0:
        raise ValueError(f"budget must be >= 0, got {budget}")
    if any(n < 0 for n in lengths):
        raise ValueError(f"lengths must be >= 0, got {list(lengths)}")
    if sum(lengths) <= budget:
        return list(lengths)
    # Find the level s: walk the sorted lengths, spending budget on the shortest first.
    remaining, open_count, level = budget, len(lengths), 0
    for n in sorted(lengths):
        step = n - level
        if step * open_count <= remaining:
            remaining -= step * open_count
            level = n
            open_count -= 1
        else:
            level += remaining // open_count
            remaining -= (remaining // open_count) * open_count
            break
    keeps = [min(n, level) for n in lengths]
    # Leftover tokens go to the longest segments first; a group of equally long segments
    # gets them only if every member can have one (else they stay unused), so the result
    # does not depend on the order of the segments.
    for n in sorted({n for n in lengths if n > level}, reverse=True):
        group = [i for i, m in enumerate(lengths) if m == n]
        if len(group) > remaining:
            break
        for i in group:
            keeps[i] += 1
        remaining -= len(group)
    return keeps


def segment_budgets(
    prompt_len: int,
    response_lens: Sequence[int],
    max_tokens: int,
    *,
    min_prompt_tokens: int = 64,
    max_response_tokens: int | None = None,
) -> tuple[int, list[int]]:
    """How many tokens to keep of the prompt and of each response (judge-side rule, see above).

    Returns ``(prompt_keep, response_keeps)`` with ``prompt_keep + sum(response_keeps) <=
    max_tokens``, ``response_keeps[i] <= min(response_lens[i], max_response_tokens)``, and
    ``prompt_keep >= min(prompt_len, min_prompt_tokens)``. The prompt is then cut from the
    left (:func:`keep_last`) and the responses from the right (:func:`keep_first`).
    """
    k = len(response_lens)
    if min_prompt_tokens < 0:
        raise ValueError(f"min_prompt_tokens must be >= 0, got {min_prompt_tokens}")
    if max_response_tokens is not None and max_response_tokens < 1:
        raise ValueError(f"max_response_tokens must be >= 1, got {max_response_tokens}")
    floor = min(prompt_len, min_prompt_tokens)
    if max_tokens < floor + k:
        raise ValueError(
            f"a budget of {max_tokens} tokens cannot hold {floor} prompt tokens (min_prompt_tokens) "
            f"and at least one token of each of {k} responses"
        )
    caps = [n if max_response_tokens is None else min(n, max_response_tokens) for n in response_lens]
    keeps = water_fill(caps, max_tokens - floor)
    prompt_keep = min(prompt_len, max_tokens - sum(keeps))
    return prompt_keep, keeps
