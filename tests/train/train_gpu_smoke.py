"""GPU smoke checks of the shared loop (run by hand on a CUDA machine; not collected by pytest).

    PYTHONPATH=. python tests/train/train_gpu_smoke.py

Prints one JSON line per check:

* ``mixed_precision/<no|bf16|fp16>``: 8 toy steps on CUDA, each in a fresh process (the
  accelerate state is per process): the autocast dtype seen inside the step, the loss
  going down, no step counted as non-finite (fp16 loss-scale overflows are the grad
  scaler's business), a checkpoint written and loaded (with the scaler state for fp16);
* ``resume/cuda``: the SIGKILL resume test of ``train_resume_script.py`` on the GPU
  (dropout uses the CUDA generator): final weights ``torch.equal`` to an uninterrupted run;
* ``fit/pm-bf16``: ``train-pm`` on a tiny Llama backbone in bf16 autocast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path[:1] + [str(REPO)] +
                [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))  # fmt: skip


def mixed_precision_child(mode: str, out: str) -> None:
    import torch

    sys.path.insert(0, str(HERE))
    from train_toy import ToyModel, collate, make_data, token_sq_error_step

    from nlhf.train import checkpoint as ckpt_lib
    from nlhf.train.config import LoopConfig, OptimConfig
    from nlhf.train.loop import TrainLoop

    seen = set()

    def step(model, batch, ctx):
        out = token_sq_error_step(model, batch, ctx)
        inner = getattr(model, "module", model)
        seen.add(str(inner.hidden(batch["x"]).dtype))  # the autocast dtype of a Linear
        return out

    cfg = LoopConfig(max_steps=8, micro_batch_size=4, grad_accum_steps=2, mixed_precision=mode, device="cuda",
                     out_dir=out, progress=False, tensorboard=False, min_free_disk_mb=1, log_every=1, save_every=8)  # fmt: skip
    loop = TrainLoop(cfg, OptimConfig(lr=0.05), ToyModel(), make_data(32), collate, step)
    res = loop.run()
    losses = [json.loads(x)["loss"] for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    ck = ckpt_lib.load_checkpoint(ckpt_lib.find_latest(out))
    print(json.dumps({
        "check": f"mixed_precision/{mode}", "device": str(loop.accelerator.device),
        "accelerate_mixed_precision": loop.accelerator.mixed_precision, "autocast_dtypes": sorted(seen),
        "first_loss": losses[0], "last_loss": losses[-1], "updates": res.updates,
        "nonfinite_steps": res.nonfinite_steps, "scaler_in_checkpoint": "scaler" in ck.loop_state,
        "ok": res.nonfinite_steps == 0 and losses[-1] < losses[0] and torch.cuda.is_available(),
    }), flush=True)  # fmt: skip


def run_py(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env(), capture_output=True, text=True, timeout=timeout)


def main() -> None:
    import torch

    print(json.dumps({"check": "env", "torch": torch.__version__, "cuda": torch.cuda.is_available(),
                      "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}), flush=True)  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="nlhf-gpu-"))
    for mode in ("no", "bf16", "fp16"):
        t = time.time()
        proc = run_py([__file__, "--child", mode, str(tmp / f"mp-{mode}")])
        line = (
            proc.stdout.strip().splitlines()[-1]
            if proc.returncode == 0
            else json.dumps({"check": f"mixed_precision/{mode}", "ok": False, "stderr": proc.stderr[-2000:]})
        )
        print(line.rstrip("}") + f', "seconds": {time.time() - t:.1f}}}', flush=True)

    # resume on CUDA
    t = time.time()
    script = str(HERE / "train_resume_script.py")
    full, cut = tmp / "resume-full", tmp / "resume-cut"
    a = run_py([script, str(full), "12", "0"])
    k = subprocess.run([sys.executable, script, str(cut), "12", "0"], env={**env(), "KILL_AT_STEP": "6", "KILL_MODE": "step"},
                       capture_output=True, text=True, timeout=240)  # fmt: skip
    r = run_py([script, str(cut), "12", "1"])
    ok = a.returncode == 0 and k.returncode == -signal.SIGKILL and r.returncode == 0
    equal = None
    if ok:
        x, y = torch.load(full / "final.pt"), torch.load(cut / "final.pt")
        equal = all(torch.equal(x[n], y[n]) for n in x)
        device = str(next(iter(x.values())).device)
    print(json.dumps({"check": "resume/cuda", "ok": bool(ok and equal), "bit_identical": equal,
                      "device": device if ok else None, "seconds": round(time.time() - t, 1),
                      "stderr": "" if ok else (a.stderr + k.stderr + r.stderr)[-2000:]}), flush=True)  # fmt: skip

    # train-pm in bf16
    t = time.time()
    code = (
        "import json, random, sys; from pathlib import Path\n"
        "from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer\n"
        f"root = Path({str(tmp / 'fit')!r}); tok = tiny_tokenizer(); lm = tiny_causal_lm(tokenizer=tok)\n"
        "lm.model.save_pretrained(root / 'bb'); tok.save_pretrained(root / 'bb')\n"
        f"sys.path.insert(0, {str(HERE)!r}); from test_train_fit import keyword_pairs\n"
        "for name, seed in (('train', 0), ('eval', 1)):\n"
        "    (root / f'{name}.jsonl').write_text(''.join(json.dumps(r) + '\\n' for r in keyword_pairs(32, seed)))\n"
        "import argparse; from nlhf.train.cli import register\n"
        "p = argparse.ArgumentParser(); register(p.add_subparsers())\n"
        "a = p.parse_args(['train-pm', '--data', str(root / 'train.jsonl'), '--eval-data', str(root / 'eval.jsonl'),"
        " '--model', str(root / 'bb'), '--out', str(root / 'pm'), 'optim.lr=3e-3', 'loop.max_steps=16',"
        " 'loop.micro_batch_size=8', 'loop.mixed_precision=bf16', 'loop.progress=false', 'loop.min_free_disk_mb=1'])\n"
        "a.func(a)\n"
    )
    proc = run_py(["-c", code])
    metrics = json.loads((tmp / "fit" / "pm" / "metrics.json").read_text()) if proc.returncode == 0 else {}
    print(json.dumps({"check": "fit/pm-bf16", "ok": proc.returncode == 0 and metrics.get("accuracy", 0) >= 0.8,
                      "accuracy": metrics.get("accuracy"), "log_loss": metrics.get("log_loss"),
                      "seconds": round(time.time() - t, 1), "stderr": proc.stderr[-1500:] if proc.returncode else ""}),
          flush=True)  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mixed_precision_child(sys.argv[2], sys.argv[3])
    else:
        main()
