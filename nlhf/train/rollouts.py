"""What the sampling trainers' steps share: mu's log-probs, importance weights, KL estimates, per-row outputs.

The online NLHF trainers (:mod:`nlhf.train.nash_md`, :mod:`nlhf.train.online_ipo`) and
RLHF (:mod:`nlhf.train.rlhf`) each sample rollouts (:class:`nlhf.sampling.Rollout`), score
them, and return one loss per row; these are the pieces of such a step that are not the
algorithm:

* :func:`reference_logps`: log mu of a rollout's tokens (the sampler's record, or one
  no-grad forward of mu);
* :func:`log_importance_weight`: log pi(y)/q(y) of each sequence (inexact sampling);
* :func:`weighted_kl`: Schulman's k1 and k3 estimates of KL(pi || mu) per sample, times pi/q;
* :func:`rollout_metrics`: ``length`` and ``truncated`` per row;
* :func:`step_output`: the loop's :class:`~nlhf.train.loop.StepOutput` with weight 1 per row;
* :func:`split_rollout`: rows [0, B) and [B, 2B) of a rollout;
* :func:`sample_against_reference`: evaluation's y ~ pi and y_ref ~ mu of each prompt, and
  :func:`make_judge_eval_step`, the judge-based evaluation step;
* :func:`judge_group_pairs`: P(y_i > y'_j | x) for every pair of a prompt's K responses (against K
  opponents, or each other);
* :class:`IterationSnapshot`: the frozen iterate pi_t of the iterative trainers (SPPO, INPO,
  DNO, MPO, mirror prox), refreshed every ``steps_per_iteration`` optimiser steps and saved in checkpoints;
* :class:`IterationData`: every micro-batch's generated responses and judge values of those
  trainers, written atomically under ``<run>/iterations/<t>/`` and read back on ``--resume``.

Cheap to import: torch loads inside the functions.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nlhf.judges import judge_preference


def reference_logps(reference: Any, rollout: Any) -> Any:
    """(B, R) log mu of the rollout's tokens: the sampler's record, or one no-grad forward of mu."""
    import torch

    from nlhf.sampling.decode import response_logps

    if rollout.ref_logps is not None:
        return rollout.ref_logps
    with torch.no_grad():
        return response_logps(reference, rollout)


def log_importance_weight(policy_logps: Any, sampling_logps: Any, mask: Any) -> Any:
    """log pi(y)/q(y) = sum_n mask (log pi(y_n|.) - log q(y_n|.)), detached. (B, R) -> (B,)."""
    from nlhf.losses.base import zero_outside  # torch

    return zero_outside(policy_logps.detach() - sampling_logps.detach(), mask).sum(dim=-1)


def weighted_kl(policy_logps: Any, ref_logps: Any, mask: Any, weight: Any | None = None) -> tuple[Any, Any]:
    """k1 and k3 estimates of KL(pi || mu) per sample (B,), times the importance weight pi/q when given."""
    from nlhf.losses.kl import kl_k1, kl_k3  # torch

    k1, k3 = kl_k1(policy_logps, ref_logps, mask), kl_k3(policy_logps, ref_logps, mask)  # (B,) each
    if weight is None:
        return k1, k3
    return weight * k1, weight * k3


def rollout_metrics(rollout: Any) -> dict[str, Any]:
    """``length`` (tokens, EOS included) and ``truncated`` (0/1) per row, (B,) float32."""
    return {
        "length": rollout.response_lengths.float(),
        "truncated": rollout.truncated.float(),
    }


def step_output(losses: Any, metrics: dict[str, Any]) -> Any:
    """StepOutput with weight 1 per row for the loss and every metric."""
    import torch

    from nlhf.train.loop import StepOutput

    ones = torch.ones_like(losses.detach(), dtype=torch.float32)  # (B,)
    return StepOutput(
        losses=losses, weights=ones, metrics={k: (v.detach().float(), ones) for k, v in metrics.items()}
    )


def split_rollout(rollout: Any, B: int) -> tuple[Any, Any]:
    """Rows [0, B) and [B, 2B) of a rollout as two rollouts (response width kept)."""
    fields = [f.name for f in dataclasses.fields(rollout)]

    def part(sl: slice) -> Any:
        return type(rollout)(
            **{n: (getattr(rollout, n)[sl] if getattr(rollout, n) is not None else None) for n in fields}
        )

    return part(slice(0, B)), part(slice(B, 2 * B))


def sample_against_reference(
    sampler: Any, batch: Any, ctx: Any, seed: int, exact: bool
) -> tuple[Any, Any, dict]:
    """Evaluation's samples of each prompt: ``(y, y_ref, metrics of y)``, y ~ pi and y_ref ~ mu.

    One decode loop (mixture_coef 1) on the rows' own streams
    (:func:`nlhf.sampling.streams.row_generator`). The metrics (B,): ``kl_k1``, ``kl_k3``
    (weighted by pi/q when the sampling is not ``exact``), ``length`` and ``truncated``.
    """
    import torch

    from nlhf.sampling.streams import row_generator

    prompts = batch.prompts
    gen = row_generator(seed, ctx, prompts.input_ids.device)
    y, y_ref = sampler.sample_policy_and_mixture(prompts, 1.0, gen)  # y ~ pi, y_ref ~ mu
    weight = (
        None if exact else torch.exp(log_importance_weight(y.policy_logps, y.sampling_logps, y.response_mask))
    )
    k1, k3 = weighted_kl(y.policy_logps, y.ref_logps, y.response_mask, weight)
    return y, y_ref, {"kl_k1": k1, "kl_k3": k3, **rollout_metrics(y)}


def make_judge_eval_step(cfg: Any, sampler: Any, judge: Any, tokenizer: Any) -> Callable[..., Any]:
    """Evaluation of the judged trainers: y ~ pi against y_ref ~ mu (one decode loop); win rate, KL, length."""
    import torch

    seed = cfg.loop.seed
    exact = cfg.sampling.is_exact

    def eval_step(model: Any, batch: Any, ctx: Any) -> Any:
        y, y_ref, y_metrics = sample_against_reference(sampler, batch, ctx, seed, exact)
        preference = judge_preference(judge, batch.texts, y, y_ref, tokenizer)  # (B,)
        return step_output(torch.zeros_like(preference), {"win_rate_vs_ref": preference, **y_metrics})

    return eval_step


def judge_group_pairs(
    judge: Any, prompts: Any, first: Any, tokenizer: Any, K: int, second: Any = None
) -> Any:
    """P(y_i > y'_j | x_b) for the K responses of each prompt: (B, K, K), in one batched judge call.

    ``first`` (and ``second``) hold B K rows, prompt-major (row b K + i is response i of
    prompt b). With ``second`` (Nash-MD-PG's opponents): all K^2 pairs (first_i, second_j).
    Without it (SPPO): the K (K - 1) ordered pairs i != j within ``first``, diagonal 1/2
    (both orders are judged: a learned judge need not be antisymmetric).
    """
    import torch

    first_texts = first.response_texts(tokenizer)  # B K
    second_texts = first_texts if second is None else second.response_texts(tokenizer)
    at = [
        (g, i, j)
        for g in range(len(prompts))
        for i in range(K)
        for j in range(K)
        if second is not None or i != j
    ]
    pref = judge.prob([prompts[g] for g, _, _ in at], [first_texts[g * K + i] for g, i, _ in at],
                      [second_texts[g * K + j] for g, _, j in at])  # (pairs,) on the CPU, checked by BaseJudge  # fmt: skip
    matrix = torch.full((len(prompts), K, K), 0.5, dtype=torch.float32)
    index = torch.tensor(at, dtype=torch.long).reshape(-1, 3)
    matrix[index[:, 0], index[:, 1], index[:, 2]] = pref.float()
    return matrix.to(first.response_ids.device)


class IterationSnapshot:
    """pi_t of an iterative trainer: a frozen copy of the policy, refreshed at the start of every outer iteration.

    Iteration k covers optimiser steps [k S, (k + 1) S) with S = ``steps_per_iteration``;
    :meth:`refresh` (called by the step function with ``ctx.step`` before it samples)
    copies the policy's trainable parameters into the copy the first time a step of a new
    iteration is computed, so pi_0 is the initial policy and pi_k the policy after k S
    steps. The copy is a deep copy of the whole model (with LoRA: the base and the adapter;
    only the trainable parameters are ever copied again or saved). ``state_dict`` holds the
    iteration and those parameters (checkpoint ``extra.pt``), so a run resumed inside an
    iteration scores and samples with the same pi_t (:class:`nlhf.train.loop.Stateful`).
    """

    def __init__(self, policy: Any, steps_per_iteration: int) -> None:
        import copy

        if steps_per_iteration < 1:
            raise ValueError(f"steps_per_iteration must be >= 1, got {steps_per_iteration!r}")
        self.steps_per_iteration = int(steps_per_iteration)
        self.policy = policy
        self.model = copy.deepcopy(policy)
        self.model.requires_grad_(False)
        self.model.eval()
        self.names = [n for n, p in policy.named_parameters() if p.requires_grad]
        self.iteration = 0

    def _params(self) -> dict[str, Any]:
        params = dict(self.model.named_parameters())
        return {n: params[n] for n in self.names}

    def sampler(self, reference: Any, sampling: Any, eos_token_id: Any, pad_token_id: Any) -> Any:
        """A :class:`nlhf.sampling.sampler.HFSampler` whose policy is pi_t (samples y ~ pi_t with one model)."""
        from nlhf.sampling.sampler import HFSampler

        return HFSampler(
            self.model, reference, sampling, eos_token_id=eos_token_id, pad_token_id=pad_token_id
        )

    def refresh(self, step: int) -> bool:
        """Copy the policy into pi_t if ``step`` starts a later iteration than the one held; True if it did."""
        import torch

        iteration = step // self.steps_per_iteration
        if iteration <= self.iteration:
            return False
        live = dict(self.policy.named_parameters())
        with torch.no_grad():
            for name, p in self._params().items():
                p.copy_(live[name].detach())
        self.iteration = iteration
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "steps_per_iteration": self.steps_per_iteration,
            "params": {n: p.detach().cpu().clone() for n, p in self._params().items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

        params = self._params()
        missing = sorted(set(params) - set(state["params"]))
        if missing:
            raise KeyError(f"iteration snapshot state lacks parameters {missing[:5]}")
        if int(state["steps_per_iteration"]) != self.steps_per_iteration:
            raise ValueError(
                f"the checkpoint was written with steps_per_iteration={state['steps_per_iteration']}, "
                f"this run has {self.steps_per_iteration}"
            )
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state["params"][name].to(p.device, p.dtype))
        self.iteration = int(state["iteration"])


ITERATIONS_DIR = "iterations"  # <run>/iterations/<t>/step-<s>-micro-<m>-rank-<r>.pt
_ROLLOUT_SKIP = ("step_logits",)  # (B, R, V): not needed by any step, and large


class IterationData:
    """The data of each outer iteration on disk: what a micro-batch generated and what the judge said.

    :meth:`cached` returns the saved values of ``(iteration, step, micro-batch, process)`` when
    the file ``<root>/<iteration>/step-<s>-micro-<m>-rank-<r>.pt`` exists, else computes them
    with ``make()``, writes them (``torch.save`` to a temporary file, then :func:`os.replace`:
    a killed write leaves no partial file) and returns them. So a run killed inside an
    iteration and resumed (``loop.resume``) trains the steps after its checkpoint on the
    same responses and judge values it had drawn, without sampling or judging again. Values:
    tensors and :class:`nlhf.sampling.Rollout` objects (``step_logits`` dropped). Each file
    records the data positions of its prompts; a resumed run whose micro-batch holds other
    prompts (another batch split) is refused naming the file. Only a run resuming a checkpoint
    keeps the directory; :func:`nlhf.train.run.make_iteration_loop` clears it (:meth:`clear`)
    otherwise, after the loop's directory check (so a run refused for a forgotten
    ``loop.resume`` deletes nothing).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def clear(self) -> None:
        """Remove every saved iteration (a fresh run in a directory that held another run)."""
        shutil.rmtree(self.root, ignore_errors=True)

    def path(self, iteration: int, ctx: Any) -> Path:
        return (
            self.root / str(iteration) / f"step-{ctx.step}-micro-{ctx.micro_step}-rank-{ctx.process_index}.pt"
        )

    def cached(
        self, iteration: int, ctx: Any, make: Callable[[], dict[str, Any]], device: Any
    ) -> dict[str, Any]:
        """``make()``'s values for this micro-batch: read from disk if saved, else computed and saved."""
        import torch

        from nlhf.sampling.rollout import Rollout

        path = self.path(iteration, ctx)
        positions = [int(p) for p in ctx.positions]
        if path.exists():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved["positions"] != positions:
                raise ValueError(f"{path}: saved for the prompts at data positions {saved['positions'][:4]}..., this "
                                 f"micro-batch holds {positions[:4]}...: resume with the same batch sizes")  # fmt: skip
            return {k: _restore(v, Rollout, device) for k, v in saved["values"].items()}
        values = make()
        record = {"positions": positions, "values": {k: _portable(v) for k, v in values.items()}}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(record, tmp)
        os.replace(tmp, path)
        return values


def iteration_values(data: IterationData | None, iteration: int, ctx: Any, make: Callable[[], dict[str, Any]],
                     device: Any) -> dict[str, Any]:  # fmt: skip
    """``data.cached(...)`` in training; ``make()`` when there is no store (``data`` None) or in evaluation."""
    if data is None or not getattr(ctx, "training", True):
        return make()
    return data.cached(iteration, ctx, make, device)


def _portable(value: Any) -> Any:
    """A tensor (on the CPU), or a rollout as ``{"rollout": {field: tensor}}`` (loadable with weights_only)."""
    if dataclasses.is_dataclass(value):
        fields = {
            f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.name not in _ROLLOUT_SKIP
        }
        return {"rollout": {k: v.detach().cpu() for k, v in fields.items() if v is not None}}
    return value.detach().cpu()


def _restore(value: Any, rollout_cls: Any, device: Any) -> Any:
    if isinstance(value, dict):
        return rollout_cls(**{k: v.to(device) for k, v in value["rollout"].items()})
    return value.to(device)


__all__ = [
    "ITERATIONS_DIR",
    "IterationData",
    "IterationSnapshot",
    "iteration_values",
    "judge_group_pairs",
    "log_importance_weight",
    "make_judge_eval_step",
    "reference_logps",
    "rollout_metrics",
    "sample_against_reference",
    "split_rollout",
    "step_output",
    "weighted_kl",
]
