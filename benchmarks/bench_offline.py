"""Offline DPO and IPO, nlhf against TRL 1.16's DPOTrainer, in one run; one JSON line each.

    OMP_NUM_THREADS=1 python benchmarks/bench_offline.py [--pairs 128] [--repeat 5]

Both sides (docs/PEERS.md): the tiny Llama of ``common.py`` (hidden 256, 4 layers, ~4.3M
parameters), the same pairs (prompt 23 tokens, responses 40 tokens, + EOS), batch 8,
fp32, no gradient checkpointing, an explicit reference copy, lr 1e-5, tau (TRL's beta)
0.1, one epoch, one thread. Every measurement runs in its own subprocess so that its peak
RSS is its own; runs are interleaved (nlhf, TRL, TRL precompute, nlhf, ...) and the
median of ``--repeat`` is reported.

Wall time per epoch, reference log-probs included:

* nlhf: building the loop (optimiser, output directory) + the reference pass
  (``ref_precompute``) + ``TrainLoop.run`` (model loading, tokenisation and saving
  excluded);
* TRL default: ``trainer.train()`` (optimiser and data loader are built inside it; the
  reference forward runs inside every step);
* TRL ``precompute_ref_log_probs=True``: ``trainer.train()`` + the reference pass, which
  TRL runs in ``DPOTrainer.__init__`` (``_precompute_ref_logps`` and the model hash it
  needs, both timed by wrapping them).

Targets (issue 4): nlhf <= 0.8 x TRL default, <= 1.0 x TRL precompute, peak RSS <= TRL's.
The summary also gives the ratio of the two sides' matrix multiply-adds (``matmul_macs``,
from the model config and the lengths): the ratio both would show at equal speed per
multiply-add. For one epoch nothing is recomputed on either side, so the only arithmetic
nlhf saves is the prompt run once per pair instead of twice: 0.79 at the default shape.
TRL is installed into /tmp/trl116 (``pip install --no-deps --target``) when missing and
put on ``PYTHONPATH`` for the peer's subprocesses only. The summary line also records the
1-minute load average before and after (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from common import emit, make_pairs, make_tiny_llama, peak_rss_mib, single_thread  # noqa: E402

TRL_DIR = Path(os.environ.get("NLHF_TRL_DIR", "/tmp/trl116"))
TRL_VERSION = "1.16.0"
TAU = 0.1
LR = 1e-5
TARGETS = {"vs_trl_default": 0.8, "vs_trl_precompute": 1.0, "rss_vs_trl": 1.0}


def ensure_trl() -> None:
    if (TRL_DIR / "trl" / "__init__.py").is_file():
        return
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--target",
            str(TRL_DIR),
            f"trl=={TRL_VERSION}",
        ],
        check=True,
    )


# ----------------------------------------------------------------------------- the two sides (subprocesses)


def ours(args: argparse.Namespace) -> None:
    """nlhf's offline trainer on the benchmark model and pairs; prints one JSON line."""
    single_thread()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import nlhf.train.dpo as offline_mod
    import nlhf.train.loop as loop_mod
    from nlhf.train.config import LoopConfig, OptimConfig
    from nlhf.train.dpo import OfflineConfig, run_offline

    cpu = {
        "ref": 0.0,
        "train": 0.0,
        "setup": 0.0,
    }  # process CPU seconds (robust to other jobs on the machine)
    offline_mod.reference_logps = _cpu_timed(offline_mod.reference_logps, cpu, "ref")
    loop_mod.TrainLoop.run = _cpu_timed(loop_mod.TrainLoop.run, cpu, "train")
    loop_mod.TrainLoop.__init__ = _cpu_timed(loop_mod.TrainLoop.__init__, cpu, "setup")
    out = tempfile.mkdtemp(prefix="nlhf-bench-offline-")
    cfg = OfflineConfig(
        loss=args.loss,
        tau=TAU,
        reduction=args.reduction,
        data=args.data,
        model=args.model,
        out=out,
        max_prompt_tokens=None,
        max_response_tokens=None,
        eval_kl=False,
        optim=OptimConfig(lr=LR, weight_decay=0.0, schedule="linear", max_grad_norm=1.0),
        loop=LoopConfig(epochs=1, micro_batch_size=args.batch, log_every=10_000, progress=False,
                        tensorboard=False, min_free_disk_mb=1, eval_at_end=False),
    )  # fmt: skip
    try:
        result = run_offline(cfg)
    finally:
        shutil.rmtree(out, ignore_errors=True)  # checkpoints are off; the saved policy is not needed
    t = result.timings
    steps = result.summary["steps"]
    emit({
        "name": f"nlhf-{args.loss}-{args.reduction}",
        "epoch_s": t["loop_setup"] + t["ref_precompute"] + t["train"],
        "ref_precompute_s": t["ref_precompute"],
        "epoch_cpu_s": cpu["setup"] + cpu["ref"] + cpu["train"],
        "train_s": t["train"],
        "s_per_step": t["train"] / steps,
        "steps": steps,
        "setup_s": t["load"] + t["tokenize"],
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "pairs": result.summary["n_train"],
        "batch": args.batch,
        "final_loss": result.summary["train"].get("loss"),
    })  # fmt: skip


def _cpu_timed(fn, spent: dict, key: str, wall_key: str | None = None):
    """``fn`` that adds its process CPU seconds to ``spent[key]`` (and wall seconds to ``spent[wall_key]``)."""

    def wrapper(*a, **k):
        c0, t0 = time.process_time(), time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[key] += time.process_time() - c0
            if wall_key is not None:
                spent[wall_key] += time.perf_counter() - t0

    return wrapper


def peer(args: argparse.Namespace) -> None:
    """TRL through ``peer_trl.py``, with its reference precompute timed; prints one extra JSON line."""
    import trl.trainer.dpo_trainer as dpo

    spent = {"precompute_s": 0.0, "precompute_cpu_s": 0.0, "train_cpu_s": 0.0}
    dpo.DPOTrainer._precompute_ref_logps = _cpu_timed(
        dpo.DPOTrainer._precompute_ref_logps, spent, "precompute_cpu_s", "precompute_s"
    )
    dpo.hash_module = _cpu_timed(dpo.hash_module, spent, "precompute_cpu_s", "precompute_s")
    dpo.DPOTrainer.train = _cpu_timed(dpo.DPOTrainer.train, spent, "train_cpu_s")
    sys.argv = [
        "peer_trl.py",
        args.loss,
        "--model",
        args.model,
        "--pairs",
        str(args.pairs),
        "--batch",
        str(args.batch),
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--completion-tokens",
        str(args.completion_tokens),
    ]
    if args.precompute_ref:
        sys.argv.append("--precompute-ref")
    import peer_trl

    peer_trl.main()
    emit({"name": "trl-precompute-time", **spent})


# ----------------------------------------------------------------------------- the arithmetic floor


def matmul_macs(model_dir: Path, prompt_tokens: int, completion_tokens: int) -> dict:
    """Multiply-adds of the linear layers (and LM head) per pair and epoch, for each side, from the config.

    Attention scores, norms and activations are left out (about a tenth of the work at this
    shape). Each response is ``completion_tokens`` + EOS tokens; no padding (the pairs have
    equal lengths). A backward pass costs twice its forward.

    * TRL (default and precompute alike): the policy runs the 2 rows ``prompt + response``
      forward and backward (logits at every position), the reference forward once.
    * nlhf (``share_prompt``): the prompt minus its last token once, without logits, then the
      2 rows ``[last prompt token, response minus EOS]`` on its KV cache (logits at every
      position); the reference forward once; the backward of the prompt part stops at the
      last layer's key/value projections (nothing else of that layer at those positions
      reaches the loss).
    """
    cfg = json.loads((model_dir / "config.json").read_text())
    h, inter, layers, vocab = (
        cfg["hidden_size"],
        cfg["intermediate_size"],
        cfg["num_hidden_layers"],
        cfg["vocab_size"],
    )
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or h // heads
    kv = h * cfg.get("num_key_value_heads", heads) * head_dim * 2  # k and v projections
    layer = kv + 2 * h * heads * head_dim + 3 * h * inter  # q, o, and the gated MLP
    token = layers * layer + h * vocab  # one position through the model and its logits
    response = completion_tokens + 1  # + EOS
    trl_rows = 2 * (prompt_tokens + response)
    trl = trl_rows * token * (1 + 2 + 1)  # policy forward + backward, reference forward
    head = prompt_tokens - 1  # prompt minus its last token: cache only, no logits
    nlhf_forward = head * layers * layer + 2 * response * token
    nlhf_backward = 2 * (2 * response * token + head * ((layers - 1) * layer + kv))
    nlhf = 2 * nlhf_forward + nlhf_backward  # reference forward, policy forward, policy backward
    return {"nlhf_mmacs_per_pair": round(nlhf / 1e6, 2), "trl_mmacs_per_pair": round(trl / 1e6, 2),
            "ratio": round(nlhf / trl, 3)}  # fmt: skip


# ----------------------------------------------------------------------------- the driver


def _run(cmd: list[str], env: dict[str, str]) -> list[dict]:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    records = []
    for line in proc.stdout.splitlines():
        if line.startswith('{"'):  # our JSON lines (TRL also prints python dicts)
            records.append(json.loads(line))
    return records


def measure(kind: str, loss: str, args: argparse.Namespace, model: Path, data: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TQDM_DISABLE="1", TRL_EXPERIMENTAL_SILENCE="1")  # fmt: skip
    common = [
        "--model",
        str(model),
        "--pairs",
        str(args.pairs),
        "--batch",
        str(args.batch),
        "--prompt-tokens",
        str(args.prompt_tokens),
        "--completion-tokens",
        str(args.completion_tokens),
    ]
    if kind == "nlhf":
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [
            sys.executable,
            __file__,
            "_ours",
            loss,
            "--data",
            str(data),
            "--reduction",
            args.reduction,
            *common,
        ]
        (rec,) = _run(cmd, env)
        return rec
    env["PYTHONPATH"] = os.pathsep.join([str(TRL_DIR), str(HERE), str(REPO)])
    cmd = [sys.executable, __file__, "_peer", loss, *common] + (
        ["--precompute-ref"] if kind == "trl-precompute" else []
    )
    recs = _run(cmd, env)
    main = next(r for r in recs if r["name"].startswith("trl-") and r["name"] != "trl-precompute-time")
    extra = next(r for r in recs if r["name"] == "trl-precompute-time")
    pre = kind == "trl-precompute"
    main["precompute_s"] = extra["precompute_s"]
    main["train_s"] = main["epoch_s"]
    main["epoch_s"] = main["train_s"] + (extra["precompute_s"] if pre else 0.0)
    main["epoch_cpu_s"] = extra["train_cpu_s"] + (extra["precompute_cpu_s"] if pre else 0.0)
    return main


def drive(args: argparse.Namespace) -> None:
    ensure_trl()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model = make_tiny_llama(work / "tiny-llama")
    data = work / f"pairs-{args.pairs}-{args.prompt_tokens}-{args.completion_tokens}.jsonl"
    with open(data, "w") as f:
        for row in make_pairs(args.pairs, args.prompt_tokens, args.completion_tokens):
            f.write(json.dumps(row) + "\n")
    load_before = os.getloadavg()[0]
    kinds = ("nlhf", "trl-default", "trl-precompute")
    summary: dict[str, dict] = {}
    for loss in args.losses:
        runs: dict[str, list[dict]] = {k: [] for k in kinds}
        for rep in range(args.repeat):
            for kind in kinds:
                rec = measure(kind, loss, args, model, data)
                rec.update(kind=kind, loss=loss, repeat=rep, load_1min=round(os.getloadavg()[0], 2))
                emit(rec)
                runs[kind].append(rec)
        med = {k: statistics.median(r["epoch_s"] for r in runs[k]) for k in kinds}
        cpu = {k: statistics.median(r["epoch_cpu_s"] for r in runs[k]) for k in kinds}
        rss = {k: max(r["peak_rss_mib"] for r in runs[k]) for k in kinds}
        summary[loss] = {
            "epoch_s": {k: round(v, 3) for k, v in med.items()},
            "epoch_s_range": {
                k: [
                    round(min(r["epoch_s"] for r in runs[k]), 3),
                    round(max(r["epoch_s"] for r in runs[k]), 3),
                ]
                for k in kinds
            },  # fmt: skip
            "vs_trl_default": round(med["nlhf"] / med["trl-default"], 3),
            "vs_trl_precompute": round(med["nlhf"] / med["trl-precompute"], 3),
            "epoch_cpu_s": {k: round(v, 3) for k, v in cpu.items()},
            "cpu_vs_trl_default": round(cpu["nlhf"] / cpu["trl-default"], 3),
            "cpu_vs_trl_precompute": round(cpu["nlhf"] / cpu["trl-precompute"], 3),
            "peak_rss_mib": rss,
            "rss_vs_trl": round(rss["nlhf"] / min(rss["trl-default"], rss["trl-precompute"]), 3),
        }
    ok = all(summary[loss][key] <= target for loss in summary for key, target in TARGETS.items())
    floor = matmul_macs(model, args.prompt_tokens, args.completion_tokens)
    emit({
        "name": "bench_offline_summary",
        "pairs": args.pairs,
        "batch": args.batch,
        "prompt_tokens": args.prompt_tokens,
        "completion_tokens": args.completion_tokens,
        "repeat": args.repeat,
        "reduction": args.reduction,
        "targets": TARGETS,
        "results": summary,
        "matmul_macs": floor,  # the ratio both sides would show at equal speed per multiply-add
        "load_1min_before": round(load_before, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "ok": ok,
    })  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("_ours", "_peer"):
        ap = argparse.ArgumentParser()
        ap.add_argument("side", choices=["_ours", "_peer"])
        ap.add_argument("loss", choices=["dpo", "ipo"])
        ap.add_argument("--model", required=True)
        ap.add_argument("--data")
        ap.add_argument("--pairs", type=int, default=128)
        ap.add_argument("--batch", type=int, default=8)
        ap.add_argument("--reduction", default="sum")
        ap.add_argument("--prompt-tokens", type=int, default=23)
        ap.add_argument("--completion-tokens", type=int, default=40)
        ap.add_argument("--precompute-ref", action="store_true")
        args = ap.parse_args()
        (ours if args.side == "_ours" else peer)(args)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=128, help="pairs in the epoch (steps = pairs / batch)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=5, help="runs of each side; the median is reported")
    ap.add_argument("--losses", nargs="+", default=["dpo", "ipo"], choices=["dpo", "ipo"])
    ap.add_argument("--prompt-tokens", type=int, default=23, help="prompt length (docs/PEERS.md: 23)")
    ap.add_argument("--completion-tokens", type=int, default=40, help="response length (docs/PEERS.md: 40)")
    ap.add_argument("--reduction", default="sum", choices=["sum", "mean"],
                    help="nlhf's sequence log-prob reduction (TRL: sum for DPO, mean for IPO; same cost)")  # fmt: skip
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "nlhf-bench"))
    drive(ap.parse_args())


if __name__ == "__main__":
    main()
