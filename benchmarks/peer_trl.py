"""Run the peer (Hugging Face TRL) on the benchmark model and data; print one JSON line.

Not imported by nlhf. The benchmark drivers run it in a subprocess (so that peak memory is
the peer's own) with TRL on ``PYTHONPATH``:

    pip install --no-deps --target /tmp/trl116 trl==1.16.0
    PYTHONPATH=/tmp/trl116 python benchmarks/peer_trl.py reward --model DIR --pairs 64 --batch 8

Settings follow docs/PEERS.md: fp32, no gradient checkpointing, an explicit reference copy
for DPO (``ref_model=None`` would reload from disk), no evaluation, no saving.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, make_pairs, single_thread, summarise  # noqa: E402


def _timing_callback(times: list[float]):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self._t)

    return StepTimer()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["reward", "dpo", "ipo"])
    ap.add_argument("--model", required=True)
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=23)
    ap.add_argument("--completion-tokens", type=int, default=40)
    ap.add_argument("--precompute-ref", action="store_true")
    args = ap.parse_args()
    single_thread()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import datasets
    import torch
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    rows = make_pairs(args.pairs, args.prompt_tokens, args.completion_tokens)
    data = datasets.Dataset.from_list(rows)
    common = dict(
        output_dir="/tmp/nlhf-peer-out",
        per_device_train_batch_size=args.batch,
        num_train_epochs=1,
        learning_rate=1e-5,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10_000,
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
        max_length=args.prompt_tokens + args.completion_tokens + 8,
    )
    times: list[float] = []
    t0 = time.perf_counter()
    if args.mode == "reward":
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1)
        model.config.pad_token_id = tok.pad_token_id
        cfg = trl.RewardConfig(**common)
        trainer = trl.RewardTrainer(
            model=model,
            args=cfg,
            train_dataset=data,
            processing_class=tok,
            callbacks=[_timing_callback(times)],
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(args.model)
        ref = AutoModelForCausalLM.from_pretrained(args.model)
        cfg = trl.DPOConfig(
            **common,
            loss_type=["sigmoid" if args.mode == "dpo" else "ipo"],
            beta=0.1,
            precompute_ref_log_probs=args.precompute_ref,
        )
        trainer = trl.DPOTrainer(
            model=model,
            ref_model=ref,
            args=cfg,
            train_dataset=data,
            processing_class=tok,
            callbacks=[_timing_callback(times)],
        )
    t_setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    trainer.train()
    t_train = time.perf_counter() - t1
    tokens_per_pair = args.prompt_tokens * 2 + args.completion_tokens * 2
    emit(
        summarise(
            f"trl-{trl.__version__}-{args.mode}{'-precompute' if args.precompute_ref else ''}",
            times,
            epoch_s=t_train,
            setup_s=t_setup,
            pairs=args.pairs,
            batch=args.batch,
            pairs_per_s=args.pairs / t_train,
            tokens_per_s=args.pairs * tokens_per_pair / t_train,
        )
    )


if __name__ == "__main__":
    main()
