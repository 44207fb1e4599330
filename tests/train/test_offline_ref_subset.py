"""Reference log-probs are computed for the pairs a run reads, and no others."""

from __future__ import annotations

import json

import pytest
import torch

from nlhf.data.schema import PreferenceExample
from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer
from nlhf.train import dpo, ref_cache
from nlhf.train.config import LoopConfig, OptimConfig
from nlhf.train.dpo import OfflineConfig, run_offline
from nlhf.train.loop import stream_indices

PAIRS = [PreferenceExample(f"question {i}?", f"good answer {i}", f"bad {i}") for i in range(12)]


def config(tmp_path, name="run", **loop) -> OfflineConfig:
    loop = {"micro_batch_size": 2, "max_steps": 2, "log_every": 1, "progress": False, "tensorboard": False,
            "min_free_disk_mb": 1, "eval_at_end": False, **loop}  # fmt: skip
    return OfflineConfig(loss="dpo", model="tiny", out=str(tmp_path / name), max_prompt_tokens=None,
                         max_response_tokens=None, optim=OptimConfig(lr=1e-3), loop=LoopConfig(**loop))  # fmt: skip


def run(cfg, model=None):
    tok = tiny_tokenizer()
    model = model if model is not None else tiny_causal_lm(tokenizer=tok, seed=0)
    return run_offline(cfg, model=model, tokenizer=tok, train_examples=PAIRS)


def test_visited_indices_are_the_stream_prefix():
    """Under one epoch: exactly the examples of the stream's first positions; from one epoch on: all."""
    assert ref_cache.visited_indices(12, 0, 4) == sorted(stream_indices(12, 0, 0, 4))
    assert len(ref_cache.visited_indices(12, 0, 4)) == 4
    assert ref_cache.visited_indices(12, 0, 12) == list(range(12))
    assert ref_cache.visited_indices(12, 0, 30) == list(range(12))  # 2.5 epochs


def test_a_short_run_computes_only_the_pairs_it_reads(tmp_path):
    """max_steps=2 x 2 pairs: mu is run on those 4 pairs (counted by a hook), the cache marks them done.

    A resume with a longer run computes the rest (8 more pairs) and reuses the first 4.
    """
    rows = []
    tok = tiny_tokenizer()
    model = tiny_causal_lm(tokenizer=tok, seed=0)
    model.register_forward_pre_hook(
        lambda m, args, kwargs: (
            rows.append(kwargs["input_ids"].shape[0]) if not torch.is_grad_enabled() else None
        ),
        with_kwargs=True,
    )
    result = run_offline(config(tmp_path), model=model, tokenizer=tok, train_examples=PAIRS)
    assert result.summary["ref_pairs_computed"] == 4
    # share_prompt: a prompt forward (b rows) and a completion forward (2b rows) per reference batch
    assert sum(rows) == 3 * 4
    cache = torch.load(tmp_path / "run" / ref_cache.REF_CACHE, weights_only=True)
    done = cache["train:done"]
    assert done.tolist() == [i in ref_cache.visited_indices(12, 0, 4) for i in range(12)]
    assert torch.all(cache["train"][~done] == 0) and torch.all(cache["train"][done] < 0)

    longer = run(config(tmp_path, max_steps=6))  # 12 positions: every pair; the same run directory
    assert longer.summary["ref_pairs_computed"] == 8 and longer.summary["ref_logps"] == "computed"
    again = torch.load(tmp_path / "run" / ref_cache.REF_CACHE, weights_only=True)
    assert bool(again["train:done"].all())
    torch.testing.assert_close(again["train"][done], cache["train"][done], rtol=0, atol=0)


def test_the_subset_gives_the_same_run_as_computing_everything(tmp_path, monkeypatch):
    """Same losses as a run whose precompute covers all 12 pairs (visited_indices forced to everything)."""
    from nlhf.train.loop import METRICS_FILE

    short = run(config(tmp_path, "short"))
    monkeypatch.setattr(dpo, "visited_indices", lambda n, seed, positions: list(range(n)))
    full = run(config(tmp_path, "full"))
    assert short.summary["ref_pairs_computed"] == 4 and full.summary["ref_pairs_computed"] == 12
    logs = [
        [json.loads(ln) for ln in (tmp_path / d / METRICS_FILE).read_text().splitlines()]
        for d in ("short", "full")
    ]
    steps = [[r for r in log if r["split"] == "train"] for log in logs]
    assert len(steps[0]) == len(steps[1]) == 2
    for a, b in zip(*steps, strict=True):
        # mu's log-probs agree up to rounding (other reference batches, other padding); the steps follow them
        for key in ("loss", "chosen_logps", "rejected_logps", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-4), key


def test_a_row_never_computed_is_an_error_not_a_zero():
    """The lookup refuses rows the precompute did not plan for, naming them."""
    ref = ref_cache.RefLogps()
    ref.table["train"] = torch.zeros(3, 2)
    ref.done["train"] = torch.tensor([True, False, True])
    items = [dpo.OfflineItem("train", i, None) for i in (0, 1)]
    with pytest.raises(RuntimeError, match=r"train pairs \[1\] were not computed"):
        ref.lookup(items)
    assert ref.lookup([items[0]]).shape == (1, 2)
