"""GPU smoke checks of the trainers (run by hand on a CUDA machine; not collected by pytest).

    PYTHONPATH=. python tests/train/train_gpu_smoke.py          # on a CUDA machine, ~1-2 minutes
    PYTHONPATH=. python tests/train/train_gpu_smoke.py --cpu    # the same logic on the CPU (no CUDA checks)

Uses the torch / transformers already installed (nothing is installed); without
``accelerate`` only the sampling check runs (a clear ``skip`` line says so). Everything runs
on tiny random models built in place (nothing downloaded). Prints one JSON line per check,
each with ``ok`` (or ``skip``), and a final ``summary`` line:

* ``sampling/row-streams``: per-row counter-based random streams on the device: the same
  uniforms as on the CPU (int64 wrapping arithmetic) and a prompt's sample independent of
  its batch;
* ``online/nash_md-bf16``: one Nash-MD-PG step (sampling, judge, loss, update) with bf16
  autocast, and its evaluation;
* ``offline/dpo-bf16``: one DPO step with bf16 autocast, and its evaluation;
* ``fsdp/dpo-1proc``: DPO under ``accelerate launch --config_file configs/accelerate/fsdp.yaml
  --num_processes 1``: 2 steps with an FSDP checkpoint each (accelerate's sharded writers),
  evaluation in lockstep, the final policy gathered; then a resume from ``ckpt-1`` to step 2,
  whose weights must equal the uninterrupted run's;
* ``mixed_precision/<no|bf16|fp16>``: 8 toy steps, each in a fresh process (the accelerate
  state is per process): the autocast dtype seen inside the step, the loss going down, no
  step counted as non-finite, a checkpoint written and loaded (with the scaler state for fp16);
* ``resume/<device>``: the SIGKILL resume test of ``train_resume_script.py`` on the device
  (dropout uses its generator): final weights ``torch.equal`` to an uninterrupted run;
* ``fit/pm-bf16``: ``train-pm`` on a tiny Llama backbone in bf16 autocast.

With ``--cpu`` the same checks run on the CPU (mixed precision is then downgraded to fp32 by
the loop, and FSDP, which accelerate only runs on GPUs, becomes one DDP process): only the
logic is exercised.
"""

from __future__ import annotations

import importlib.util
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
RESULTS: list[dict] = []


def env(**extra: str) -> dict[str, str]:
    paths = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=os.pathsep.join(paths),
                **extra)  # fmt: skip


def report(record: dict) -> None:
    RESULTS.append(record)
    print(json.dumps(record, default=str), flush=True)


def child_line(check: str, proc: subprocess.CompletedProcess, t0: float) -> dict:
    """The JSON line a child printed last, or a failure record with its stderr."""
    lines = [x for x in proc.stdout.strip().splitlines() if x.startswith("{")]
    if proc.returncode == 0 and lines:
        record = json.loads(lines[-1])
    else:
        record = {"check": check, "ok": False, "returncode": proc.returncode, "stderr": proc.stderr[-2000:]}
    record["seconds"] = round(time.time() - t0, 1)
    return record


def run_py(args: list[str], timeout: int = 240, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], env=env(**extra), capture_output=True, text=True, timeout=timeout
    )


# ----------------------------------------------------------------------------- children


def mixed_precision_child(mode: str, out: str, device: str) -> None:
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

    cfg = LoopConfig(max_steps=8, micro_batch_size=4, grad_accum_steps=2, mixed_precision=mode, device=device,
                     out_dir=out, progress=False, tensorboard=False, min_free_disk_mb=1, log_every=1, save_every=8)  # fmt: skip
    loop = TrainLoop(cfg, OptimConfig(lr=0.05), ToyModel(), make_data(32), collate, step)
    res = loop.run()
    losses = [json.loads(x)["loss"] for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    ck = ckpt_lib.load_checkpoint(ckpt_lib.find_latest(out))
    want = (
        {"no": "torch.float32", "bf16": "torch.bfloat16", "fp16": "torch.float16"}[mode]
        if device == "cuda"
        else "torch.float32"
    )
    print(json.dumps({
        "check": f"mixed_precision/{mode}", "device": str(loop.accelerator.device),
        "accelerate_mixed_precision": loop.accelerator.mixed_precision, "autocast_dtypes": sorted(seen),
        "first_loss": losses[0], "last_loss": losses[-1], "updates": res.updates,
        "nonfinite_steps": res.nonfinite_steps, "scaler_in_checkpoint": "scaler" in ck.loop_state,
        "ok": res.nonfinite_steps == 0 and losses[-1] < losses[0] and sorted(seen) == [want],
    }), flush=True)  # fmt: skip


def trainer_child(name: str, root: str, out: str, device: str) -> None:
    """One step of ``name`` (nash_md or dpo) with bf16 autocast on ``device``, then its evaluation."""
    import math

    sys.path.insert(0, str(HERE))
    from trainer_runs import run_trainer

    res = run_trainer(name, root, out, micro=4, max_steps=1, sgd=False, mixed_precision="bf16", device=device)
    train, ev = res["train"], res["eval"]
    finite = all(math.isfinite(v) for v in train.values() if isinstance(v, float) and v == v)
    ok = (
        res["updates"] == 1
        and math.isfinite(train["loss"])
        and finite
        and bool(ev)
        and res.get("update", 0) > 0
    )
    print(json.dumps({"check": f"{'online' if name == 'nash_md' else 'offline'}/{name}-bf16", "ok": ok,
                      "device": device, "train": train, "eval": ev, "update": res.get("update")}, default=str),
          flush=True)  # fmt: skip


def fsdp_child(root: str, out: str, phase: str) -> None:
    """DPO for 2 steps with a checkpoint each step (``phase=full``), or resumed from ckpt-1 (``phase=resume``)."""
    import shutil

    import torch

    sys.path.insert(0, str(HERE))
    from trainer_runs import run_trainer

    from nlhf.train import checkpoint as ckpt_lib

    if phase == "resume":  # drop the newest checkpoint: the run continues from ckpt-1
        shutil.rmtree(Path(out) / "ckpt-2")
    res = run_trainer("dpo", root, out, micro=4, max_steps=2, save_every=1, sgd=False, resume=phase == "resume",
                      device="auto")  # fmt: skip
    from accelerate import PartialState

    if PartialState().is_main_process:
        torch.save(res["params"], Path(out) / f"final-{phase}.pt")
        latest = ckpt_lib.find_latest(out)
        print(json.dumps({"phase": phase, "distributed_type": PartialState().distributed_type.name,
                          "fsdp_files": sorted(p.name for p in (latest / "fsdp").iterdir()) if (latest / "fsdp").is_dir() else [],
                          "eval": res["eval"], "steps": res["steps"], "policy_saved": (Path(out) / "policy").is_dir()}),
              flush=True)  # fmt: skip


# ----------------------------------------------------------------------------- checks


def check_sampling(device: str) -> None:
    import torch

    from nlhf.data.collate import collate_prompts
    from nlhf.models.tiny import tiny_causal_lm, tiny_tokenizer
    from nlhf.sampling import SamplingConfig, generate
    from nlhf.sampling.streams import RowGenerator, counter_uniforms

    t0 = time.time()
    seeds = torch.tensor([0, 1, -5, 2**62, -(2**63)], dtype=torch.int64)
    same = torch.equal(counter_uniforms(seeds.to(device), 3, 40).cpu(), counter_uniforms(seeds, 3, 40))
    tok = tiny_tokenizer()
    model = tiny_causal_lm(tokenizer=tok, seed=0).to(device)
    prompts = [[1, 72, 101, 108], [1, 87, 104, 97, 116, 32], [1, 65]]
    cfg = SamplingConfig(max_new_tokens=12)
    whole_batch = collate_prompts(prompts, pad_token_id=2).to(device)
    whole = generate(
        model, whole_batch.input_ids, whole_batch.attention_mask, cfg, RowGenerator([7, 8, 9], device=device)
    )
    alone = collate_prompts(prompts[2:], pad_token_id=2).to(device)
    part = generate(model, alone.input_ids, alone.attention_mask, cfg, RowGenerator([9], device=device))
    n = int(part.response_lengths[0])
    invariant = whole.response_ids[2, :n].tolist() == part.response_ids[0, :n].tolist()
    report({"check": "sampling/row-streams", "device": device, "uniforms_equal_cpu": same,
            "batch_invariant": invariant, "ok": same and invariant, "seconds": round(time.time() - t0, 1)})  # fmt: skip


def check_trainers(tmp: Path, device: str) -> None:
    sys.path.insert(0, str(HERE))
    from trainer_runs import prepare

    root = prepare(tmp / "files")
    for name in ("nash_md", "dpo"):
        t0 = time.time()
        proc = run_py([__file__, "--child", "trainer", name, str(root), str(tmp / f"bf16-{name}"), device])
        report(child_line(f"{'online' if name == 'nash_md' else 'offline'}/{name}-bf16", proc, t0))


def check_fsdp(tmp: Path, device: str) -> None:
    import torch

    t0 = time.time()
    root = tmp / "files"
    out = tmp / "fsdp"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs/accelerate/fsdp.yaml"),
              "--num_processes", "1"]  # fmt: skip
    if device == "cpu":  # accelerate runs FSDP on GPUs only: the same child as one DDP process on the CPU
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    lines = {}
    for phase in ("full", "resume"):
        proc = subprocess.run([*launch, __file__, "--child", "fsdp", str(root), str(out), phase], env=env(),
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        found = [x for x in proc.stdout.splitlines() if x.startswith('{"phase"')]
        if proc.returncode != 0 or not found:
            report({"check": "fsdp/dpo-1proc", "ok": False, "phase": phase, "stderr": proc.stderr[-2500:],
                    "seconds": round(time.time() - t0, 1)})  # fmt: skip
            return
        lines[phase] = json.loads(found[-1])
    a, b = torch.load(out / "final-full.pt"), torch.load(out / "final-resume.pt")
    equal = a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    kind = lines["full"]["distributed_type"]
    ok = (
        equal
        and lines["resume"]["steps"] == 2
        and lines["full"]["policy_saved"]
        and bool(lines["full"]["eval"])
    )
    if device != "cpu":
        ok = ok and kind == "FSDP" and bool(lines["full"]["fsdp_files"])
    report({"check": "fsdp/dpo-1proc", "ok": ok, "distributed_type": kind, "resume_equal": equal,
            "fsdp_files": lines["full"]["fsdp_files"], "eval": lines["full"]["eval"],
            "note": "" if device != "cpu" else "--cpu: FSDP needs GPUs; ran as one DDP process",
            "seconds": round(time.time() - t0, 1)})  # fmt: skip


def check_mixed_precision(tmp: Path, device: str) -> None:
    for mode in ("no", "bf16", "fp16"):
        t0 = time.time()
        proc = run_py([__file__, "--child", "mixed_precision", mode, str(tmp / f"mp-{mode}"), device])
        report(child_line(f"mixed_precision/{mode}", proc, t0))


def check_resume(tmp: Path, device: str) -> None:
    import torch

    t0 = time.time()
    script = str(HERE / "train_resume_script.py")
    full, cut = tmp / "resume-full", tmp / "resume-cut"
    a = run_py([script, str(full), "12", "0"])
    k = run_py([script, str(cut), "12", "0"], KILL_AT_STEP="6", KILL_MODE="step")
    r = run_py([script, str(cut), "12", "1"])
    ok = a.returncode == 0 and k.returncode == -signal.SIGKILL and r.returncode == 0
    equal = None
    if ok:
        x, y = torch.load(full / "final.pt"), torch.load(cut / "final.pt")
        equal = all(torch.equal(x[n], y[n]) for n in x)
    report({"check": f"resume/{device}", "ok": bool(ok and equal), "bit_identical": equal,
            "seconds": round(time.time() - t0, 1), "stderr": "" if ok else (a.stderr + k.stderr + r.stderr)[-2000:]})  # fmt: skip


def check_fit(tmp: Path, device: str) -> None:
    t0 = time.time()
    root = tmp / "files"
    code = (
        "import argparse; from nlhf.train.cli import register\n"
        "p = argparse.ArgumentParser(); register(p.add_subparsers())\n"
        f"a = p.parse_args(['train-pm', '--data', {str(root / 'pairs.jsonl')!r}, '--eval-data', "
        f"{str(root / 'pairs.jsonl')!r}, '--model', {str(root / 'backbone')!r}, '--out', {str(tmp / 'pm')!r}, "
        "'optim.lr=3e-3', 'loop.max_steps=16', 'loop.micro_batch_size=4', 'loop.mixed_precision=bf16', "
        f"'loop.device={device}', 'loop.progress=false', 'loop.min_free_disk_mb=1'])\n"
        "a.func(a)\n"
    )
    proc = run_py(["-c", code])
    path = tmp / "pm" / "metrics.json"
    metrics = json.loads(path.read_text()) if proc.returncode == 0 and path.is_file() else {}
    report({"check": "fit/pm-bf16", "ok": proc.returncode == 0 and metrics.get("accuracy", 0) >= 0.75,
            "accuracy": metrics.get("accuracy"), "log_loss": metrics.get("log_loss"),
            "seconds": round(time.time() - t0, 1), "stderr": proc.stderr[-1500:] if proc.returncode else ""})  # fmt: skip


def main() -> int:
    import torch

    cpu = "--cpu" in sys.argv[1:]
    cuda = torch.cuda.is_available()
    missing = [
        m
        for m in ("transformers", "accelerate", "peft", "safetensors")
        if importlib.util.find_spec(m) is None
    ]
    report({"check": "env", "torch": torch.__version__, "cuda": cuda, "cpu_mode": cpu, "missing_packages": missing,
            "gpu": torch.cuda.get_device_name(0) if cuda else None})  # fmt: skip
    if not cuda and not cpu:
        report(
            {
                "check": "all",
                "skip": "no CUDA GPU here: nothing checked (run with --cpu to exercise the logic on the CPU)",
            }
        )
        return 0
    device = "cpu" if cpu else "cuda"
    t_start = time.time()
    if "transformers" in missing:
        report({"check": "all", "skip": "transformers is not installed: nothing to check"})
        return 1
    check_sampling(device)
    if "accelerate" in missing:
        report({"check": "trainers", "skip": "accelerate is not installed: the trainer checks need it (pip install "
                "accelerate); only sampling/row-streams ran"})  # fmt: skip
    else:
        tmp = Path(tempfile.mkdtemp(prefix="nlhf-gpu-"))
        check_trainers(tmp, device)
        check_fsdp(tmp, device)
        check_mixed_precision(tmp, device)
        check_resume(tmp, device)
        check_fit(tmp, device)
    if "peft" in missing:
        report(
            {"check": "lora", "skip": "peft is not installed: LoRA is not exercised (no check here needs it)"}
        )
    failed = [r["check"] for r in RESULTS if r.get("ok") is False]
    report({"check": "summary", "device": device, "passed": sum(1 for r in RESULTS if r.get("ok") is True),
            "failed": failed, "seconds": round(time.time() - t_start, 1)})  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, args = sys.argv[2], sys.argv[3:]
        if kind == "mixed_precision":
            mixed_precision_child(*args)
        elif kind == "trainer":
            trainer_child(*args)
        elif kind == "fsdp":
            fsdp_child(*args)
    else:
        sys.exit(main())
