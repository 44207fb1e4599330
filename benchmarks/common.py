"""Shared set-up for the benchmarks: the tiny Llama of docs/PEERS.md and length-controlled pairs.

Both sides of every comparison (nlhf and the peer) read the same model directory and the
same pairs, so a ratio measured in one run compares like with like. The tokenizer is
nlhf's byte-level one (one token per byte, no chat template), so a text of k ASCII bytes is
exactly k tokens for both libraries.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import statistics
import sys
from pathlib import Path

HH_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hh-rlhf-harmless-1700.jsonl.gz"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_tiny_llama(path: str | Path, seed: int = 0) -> Path:
    """Save the benchmark model (Llama, hidden 256, 4 layers, ~4M params) and tokenizer."""
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer

    path = Path(path)
    if (path / "config.json").exists():
        return path
    tok = tiny_tokenizer()
    tok.chat_template = None  # plain-text prompts on both sides
    model = tiny_causal_lm(
        hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, seed=seed, tokenizer=tok
    )
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _ascii(text: str) -> str:
    return text.encode("ascii", "ignore").decode()


def make_pairs(n: int, prompt_tokens: int = 23, completion_tokens: int = 40) -> list[dict]:
    """``n`` prompt/chosen/rejected rows of exactly the given byte (= token) lengths.

    Text comes from the HH-RLHF file when it is there (the last bytes of the human turn,
    the first bytes of each response), else from a fixed synthetic pattern.
    """
    rows = []
    if HH_PATH.exists():
        with gzip.open(HH_PATH, "rt") as f:
            for line in f:
                r = json.loads(line)
                prompt, _, chosen = _ascii(r["chosen"]).rpartition("\n\nAssistant:")
                rejected = _ascii(r["rejected"]).rpartition("\n\nAssistant:")[2]
                rows.append((prompt, chosen, rejected))
    rows = rows or [
        (f"Question number {i} about things", f" Answer {i} yes" * 9, f" Answer {i} no" * 9) for i in range(n)
    ]
    out = []
    for i in range(n):
        p, c, r = rows[i % len(rows)]
        p = (p * 5)[-prompt_tokens:].rjust(prompt_tokens, ".")
        c = (c.strip() + " " + c * 5)[:completion_tokens].ljust(completion_tokens, ".")
        r = (r.strip() + " " + r * 5)[:completion_tokens].ljust(completion_tokens, "!")
        if c == r:
            r = r[:-1] + "?"
        out.append({"prompt": p, "chosen": c, "rejected": r})
    return out


def summarise(name: str, step_times: list[float], **extra) -> dict:
    times = step_times[1:] if len(step_times) > 2 else step_times  # drop the warm-up step
    return {
        "name": name,
        "median_s_per_step": statistics.median(times),
        "steps": len(step_times),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        **extra,
    }


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def single_thread() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


if __name__ == "__main__":  # pragma: no cover
    make_tiny_llama(sys.argv[1])
