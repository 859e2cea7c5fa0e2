"""The resumable trainer: Adam, gradient clipping, EMA, gauge fixing, checkpoints and a metrics log.

Outputs in the run directory: ``checkpoint.pt`` (atomic, every ``checkpoint_every`` steps and at the
end) and ``metrics.jsonl`` (one JSON object of the means since the previous one every ``log_every``
steps and at every checkpoint, so that no averaging window spans a checkpoint). Running again with
the same directory resumes from the checkpoint: model, EMA, optimizer and RNG states are restored,
log lines past the checkpoint are dropped, and the final parameters and the log equal those of an
uninterrupted run.

Randomness comes in ``shards`` streams (``training.shards``, default 1): each step's global batch is
``shards`` blocks of ``batch_size / shards`` samples, block s drawn, noised and scored with stream s
(stream 0 is seeded with ``training.seed``). Under ``torchrun`` with W processes (W dividing
``shards``) rank r computes blocks ``r·S/W ... (r+1)·S/W − 1`` and the gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel`, so W processes follow the parameters of one
process with the same config to float rounding, and a run can resume on another W. Rank 0 writes the
checkpoints (with every stream's state) and the log (means over all ranks).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from boltzclf.core import atomic, distributed
from boltzclf.core.errors import BoltzclfError, CheckpointError
from boltzclf.training import checkpoint
from boltzclf.training.config import TrainingConfig
from boltzclf.training.ema import EMA

log = logging.getLogger(__name__)

MAX_BAD_STEPS = 10


def train(model, loss_fn, data, config: TrainingConfig, out_dir: str | Path, resolved_config: dict,
          device: torch.device, on_step: Callable[[int], None] | None = None):
    """Train ``model`` in place and return the model to evaluate (the EMA copy when enabled).

    Parameters
    ----------
    model
        An :class:`~boltzclf.models.EnergyModel` on ``device``.
    loss_fn
        ``loss_fn(model, batch, generator) -> {"loss": (B,), ...}``.
    data
        Object with ``sample(batch_size, generator) -> tuple of tensors``.
    config
        Optimisation settings.
    out_dir
        Run directory (checkpoint and metrics log).
    resolved_config
        Stored in checkpoints so they are self-describing.
    on_step
        Called with the number of completed steps after each step (progress hooks, tests).
    """
    out_dir = Path(out_dir)
    main = distributed.is_main()
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    ema = EMA(model, config.ema, config.ema_power) if config.ema > 0 else None
    generators = [torch.Generator(device=device).manual_seed(distributed.stream_seed(config.seed, s))
                  for s in range(config.shards)]
    own = distributed.shard(config.shards, distributed.world_size(), distributed.rank(), "training.shards")
    start = _resume(ckpt_path, model, ema, optimizer, generators) if ckpt_path.exists() else 0
    if start == 0 and config.warm_start:
        _warm_start(model, ema, config.warm_start)
    if main:
        _truncate_log(out_dir / "metrics.jsonl", start)
    step_loss = _ShardedLoss(model, loss_fn, data, config.batch_size // config.shards)
    if distributed.world_size() > 1:
        step_loss = DistributedDataParallel(step_loss, find_unused_parameters=True, broadcast_buffers=False)

    bad_steps = 0
    running: dict[str, float] = {}
    progress = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train",
                    disable=None if main else True, leave=False)
    for step in progress:
        done = step + 1
        _set_learning_rate(optimizer, config, step)
        out = step_loss([generators[s] for s in own])
        total = out["loss"].mean()
        if _finite_everywhere(total):
            bad_steps = 0
            grad_norm = _update(model, optimizer, total, config.grad_clip)
            if ema is not None:
                ema.update(model, done)
            _accumulate(running, out, grad_norm)
        else:
            if distributed.world_size() > 1:  # every rank's backward joins the gradient all-reduce
                (total.nan_to_num(0.0, 0.0, 0.0) * 0.0).backward()
                optimizer.zero_grad(set_to_none=True)
            bad_steps += 1
            log.warning("step %d: non-finite loss, update skipped (%d in a row)", done, bad_steps)
            if bad_steps >= MAX_BAD_STEPS:
                raise BoltzclfError(f"training diverged: {bad_steps} consecutive non-finite losses at step {done}")
        at_checkpoint = done % config.checkpoint_every == 0 or done == config.steps
        if (done % config.log_every == 0 or at_checkpoint) and running:  # a resumed run restarts its window here
            record = _mean_over_ranks(running)
            if main:
                _append_log(out_dir / "metrics.jsonl", done, record)
            progress.set_postfix(loss=f"{record['loss']:.4f}")
            running = {}
        if at_checkpoint:
            states = _stream_states(generators, own)
            if main:
                checkpoint.save(ckpt_path, config=resolved_config, step=done, model=model, ema=ema,
                                optimizer=optimizer, generator_states=states, generator_device=device.type)
        if on_step is not None:
            on_step(done)
    progress.close()
    return ema.shadow if ema is not None else model


class _ShardedLoss(nn.Module):
    """This process's blocks of the global batch as one module call (the unit DDP synchronises):
    per-sample losses of every block, each drawn and noised with its own stream, concatenated."""

    def __init__(self, model: nn.Module, loss_fn, data, block_size: int):
        super().__init__()
        self.model, self.loss_fn, self.data, self.block_size = model, loss_fn, data, block_size

    def forward(self, generators: list[torch.Generator]) -> dict[str, torch.Tensor]:
        outs = [self.loss_fn(self.model, self.data.sample(self.block_size, g), g) for g in generators]
        if len(outs) == 1:
            return outs[0]
        return {key: torch.cat([out[key].reshape(-1) for out in outs]) for key in outs[0]}


def _finite_everywhere(total: torch.Tensor) -> bool:
    """Whether the mean loss is finite on every rank (all ranks must agree to step or to skip)."""
    finite = torch.isfinite(total.detach()).to(torch.float64).reshape(1)
    if distributed.world_size() > 1:
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())


def _mean_over_ranks(running: dict) -> dict:
    """The means since the last log line, over all ranks (equal blocks per rank)."""
    keys = [k for k in running if k != "n"]
    values = torch.tensor([running[k] / running["n"] for k in keys], dtype=torch.float64)
    if distributed.world_size() > 1:
        torch.distributed.all_reduce(values)
        values /= distributed.world_size()
    return dict(zip(keys, values.tolist()))


def _stream_states(generators: list[torch.Generator], own: range) -> list[torch.Tensor]:
    """Every stream's state, collected from the ranks that advance it."""
    states = dict(kv for part in distributed.all_gather_object({s: generators[s].get_state() for s in own})
                  for kv in part.items())
    return [states[s] for s in range(len(generators))]


def _set_learning_rate(optimizer, config: TrainingConfig, step: int) -> None:
    """The schedule is a pure function of the step, so a resumed run follows it exactly."""
    lr = config.lr
    if config.lr_schedule == "cosine":
        lr *= 0.5 * (1.0 + math.cos(math.pi * step / config.steps))
    for group in optimizer.param_groups:
        group["lr"] = lr


def _update(model, optimizer, total: torch.Tensor, grad_clip: float) -> torch.Tensor:
    """One optimiser step with gradient clipping, then the free-energy gauge; returns the grad norm."""
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    model.gauge_fix_()
    return grad_norm


def _resume(path: Path, model, ema, optimizer, generators: list[torch.Generator]) -> int:
    state = checkpoint.load(path)
    checkpoint.load_weights(model, state["model"], path)
    if ema is not None:
        if state["ema"] is None:
            raise BoltzclfError(f"{path}: saved without EMA but the config enables it")
        checkpoint.load_weights(ema.shadow, state["ema"], path)
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as exc:  # e.g. written before a parameter was added to the model
        raise CheckpointError(f"{path}: its optimizer state does not fit the model ({exc}); it cannot be "
                              "resumed exactly, delete it to retrain (it can still warm-start a new run)") from None
    saved_device = state["rng"]["generator_device"]
    if saved_device != generators[0].device.type:
        raise CheckpointError(f"{path}: the run was trained on {saved_device}; resume it with --device "
                              f"{saved_device} (exact resume needs the same device's random stream)")
    states = checkpoint.generator_states(state)
    if len(states) != len(generators):
        raise CheckpointError(f"{path}: holds {len(states)} random streams, the config has training.shards "
                              f"{len(generators)}")
    for generator, saved in zip(generators, states):
        generator.set_state(saved)
    torch.set_rng_state(state["rng"]["torch_cpu"])
    log.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"])


def _warm_start(model, ema, source: str) -> None:
    state = checkpoint.load(source)
    weights = state["ema"] if state["ema"] is not None else state["model"]
    checkpoint.load_weights(model, weights, source)
    if ema is not None:
        checkpoint.load_weights(ema.shadow, weights, source)
    log.info("warm start from %s (step %d)", source, state["step"])


def _accumulate(running: dict, out: dict, grad_norm: torch.Tensor) -> None:
    running["n"] = running.get("n", 0) + 1
    running["grad_norm"] = running.get("grad_norm", 0.0) + float(grad_norm)
    for key, value in out.items():
        running[key] = running.get(key, 0.0) + float(value.detach().mean())


def _append_log(path: Path, step: int, means: dict) -> None:
    """Append ``means`` of the logged values at ``step`` as one JSON line."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"step": step, **means}) + "\n")


def _logged_step(line: str) -> float:
    """The step of a log line; a blank or partly written line (killed mid-append) sorts past any step."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a resumed run restarts from)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if _logged_step(ln) <= step]
    atomic.write_text(path, "".join(line + "\n" for line in lines))
