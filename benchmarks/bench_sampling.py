"""Speed of the token-level mixture sampler: separate KV caches (linear) vs full recompute (quadratic).

    OMP_NUM_THREADS=1 python benchmarks/bench_sampling.py [--model DIR] [--repeat 3] [--tokens 32 64 128]

Model: the benchmark tiny Llama of docs/PEERS.md (``benchmarks/common.py: make_tiny_llama``,
hidden 256, 4 layers, vocab 259, fp32), as policy and (a second copy, perturbed) as
reference; B = 8 prompts of 23 tokens; every response runs to the full number of new
tokens (``stop_on_eos=False``), temperature 1. One JSON line per case, then a summary line.

Cases, at each number of new tokens:
* ``mixture_cached``: :func:`nlhf.sampling.sample_mixture` (one cache per model);
* ``policy_and_mixture_cached``: :func:`nlhf.sampling.sample_policy_and_mixture`, what a
  Nash-MD step samples (y with log pi and log mu of its tokens, and y') in one loop;
* ``policy_and_mixture_row_streams``: the same with one random stream per prompt row
  (:class:`nlhf.sampling.decode.RowGenerator`, what the trainers pass: samples independent
  of the batch layout) instead of one ``torch.Generator``; the summary gives its cost ratio;
* ``mixture_uncached``: the same mixture with no cache: each step runs both models on the
  whole sequence so far (what TRL 1.13's correct configuration, ``use_cache=False``, does;
  only the last position's logits are computed, which favours it).
``seconds`` is the best wall time of ``--repeat`` runs and ``cpu_seconds`` the best CPU time of
this process (less sensitive to other jobs on a shared machine); the repeats are interleaved. The summary gives
each case's growth from the shortest to the longest length (4x more tokens: ~4x for a
linear cost, up to ~16x for a quadratic one) and the uncached / cached ratio per length.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, make_pairs, make_tiny_llama, peak_rss_mib, single_thread  # noqa: E402

BATCH = 8
PROMPT_TOKENS = 23
MIXTURE_COEF = 0.5


def uncached_mixture(policy, ref, prompt_ids, prompt_mask, mixture_coef, cfg, generator):
    """The mixture without a cache: both models recompute the whole prefix at every step."""
    import torch

    from nlhf.sampling import mixture_logits, position_ids_from_mask, process_logits, sample_tokens

    B = prompt_ids.shape[0]
    ids, mask = prompt_ids, prompt_mask
    with torch.no_grad():
        for _ in range(cfg.max_new_tokens):
            pos = position_ids_from_mask(mask)
            kwargs = dict(
                input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=1
            )
            logits = mixture_logits(policy(**kwargs).logits[:, -1], ref(**kwargs).logits[:, -1], mixture_coef)
            tokens, _ = sample_tokens(
                process_logits(logits, cfg.temperature, cfg.top_k, cfg.top_p), generator
            )
            ids = torch.cat([ids, tokens[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=mask.device)], dim=1)
    return ids[:, prompt_ids.shape[1] :]


def timed(fn, sync=lambda: None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="/tmp/nlhf-bench-tiny-llama", help="benchmark model dir (made if absent)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs per case; the best (and the median) is reported"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp32 either way)")
    parser.add_argument(
        "--tokens", type=int, nargs="+", default=[32, 64, 128], help="new tokens per response"
    )
    args = parser.parse_args()
    single_thread()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nlhf.data.collate import collate_prompts
    from nlhf.sampling import SamplingConfig, make_generator, sample_mixture, sample_policy_and_mixture
    from nlhf.sampling.decode import RowGenerator

    path = make_tiny_llama(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval().to(args.device)
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval().to(args.device)
    with torch.no_grad():  # a different reference, so the mixture is a real mixture
        gen = torch.Generator().manual_seed(1)
        for p in ref.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen).to(p.device))
    prompts = [
        tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        for row in make_pairs(BATCH, PROMPT_TOKENS)
    ]
    batch = collate_prompts(prompts, pad_token_id=tokenizer.pad_token_id).to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    ids, mask = batch.input_ids, batch.attention_mask
    assert ids.shape == (BATCH, PROMPT_TOKENS), ids.shape

    cases = {
        "mixture_cached": lambda cfg: sample_mixture(
            policy, ref, ids, mask, MIXTURE_COEF, cfg, make_generator(0)
        ),
        "policy_and_mixture_cached": lambda cfg: sample_policy_and_mixture(
            policy, ref, ids, mask, MIXTURE_COEF, cfg, make_generator(0)
        ),
        "policy_and_mixture_row_streams": lambda cfg: sample_policy_and_mixture(
            policy, ref, ids, mask, MIXTURE_COEF, cfg, RowGenerator(range(BATCH), device=ids.device)
        ),
        "mixture_uncached": lambda cfg: uncached_mixture(
            policy, ref, ids, mask, MIXTURE_COEF, cfg, make_generator(0)
        ),
    }
    # warm-up (first calls allocate)
    for fn in cases.values():
        fn(SamplingConfig(max_new_tokens=4, stop_on_eos=False))

    # repeats are interleaved over lengths and cases, so a change in the machine's load hits them all
    walls: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.repeat):
        for n in args.tokens:
            cfg = SamplingConfig(max_new_tokens=n, stop_on_eos=False)
            for name, fn in cases.items():
                wall, cpu = timed(lambda fn=fn, cfg=cfg: fn(cfg), sync)
                walls.setdefault((name, n), []).append(wall)
                cpus.setdefault((name, n), []).append(cpu)
    seconds: dict[str, dict[int, float]] = {name: {} for name in cases}
    cpu_seconds: dict[str, dict[int, float]] = {name: {} for name in cases}
    for n in args.tokens:
        for name in cases:
            s = seconds[name][n] = min(walls[name, n])
            cpu_seconds[name][n] = min(cpus[name, n])
            emit(
                {
                    "name": name,
                    "new_tokens": n,
                    "batch": BATCH,
                    "prompt_tokens": PROMPT_TOKENS,
                    "seconds": round(s, 4),
                    "median_seconds": round(statistics.median(walls[name, n]), 4),
                    "cpu_seconds": round(cpu_seconds[name][n], 4),
                    "ms_per_new_token": round(1000 * s / n, 3),
                    "repeat": args.repeat,
                    "threads": torch.get_num_threads(),
                    "device": args.device,
                }
            )
    lo, hi = min(args.tokens), max(args.tokens)
    emit(
        {
            "name": "summary",
            f"growth_from_{lo}_to_{hi}_tokens": {k: round(v[hi] / v[lo], 2) for k, v in seconds.items()},
            f"cpu_growth_from_{lo}_to_{hi}_tokens": {
                k: round(v[hi] / v[lo], 2) for k, v in cpu_seconds.items()
            },
            "uncached_over_cached_mixture": {
                str(n): round(seconds["mixture_uncached"][n] / seconds["mixture_cached"][n], 2)
                for n in args.tokens
            },
            "cpu_uncached_over_cached_mixture": {
                str(n): round(cpu_seconds["mixture_uncached"][n] / cpu_seconds["mixture_cached"][n], 2)
                for n in args.tokens
            },
            "row_streams_over_torch_generator": {
                str(n): round(
                    seconds["policy_and_mixture_row_streams"][n] / seconds["policy_and_mixture_cached"][n], 3
                )
                for n in args.tokens
            },
            "cpu_row_streams_over_torch_generator": {
                str(n): round(
                    cpu_seconds["policy_and_mixture_row_streams"][n]
                    / cpu_seconds["policy_and_mixture_cached"][n],
                    3,
                )
                for n in args.tokens
            },
            "peak_rss_mib": round(peak_rss_mib(), 1),
        }
    )


if __name__ == "__main__":
    main()
