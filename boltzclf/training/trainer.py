"""The resumable trainer: Adam, gradient clipping, EMA, gauge fixing, checkpoints and a metrics log.

Outputs in the run directory: ``checkpoint.pt`` (atomic, every ``checkpoint_every`` steps and at the
end) and ``metrics.jsonl`` (one JSON object per ``log_every`` steps). Running again with the same
directory resumes from the checkpoint: model, EMA, optimizer and RNG states are restored, log lines
past the checkpoint are dropped, and the final parameters equal those of an uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from boltzclf.core import atomic
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
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    ema = EMA(model, config.ema) if config.ema > 0 else None
    generator = torch.Generator(device=device).manual_seed(config.seed)
    start = _resume(ckpt_path, model, ema, optimizer, generator) if ckpt_path.exists() else 0
    if start == 0 and config.warm_start:
        _warm_start(model, ema, config.warm_start)
    _truncate_log(out_dir / "metrics.jsonl", start)

    bad_steps = 0
    running: dict[str, float] = {}
    progress = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train",
                    disable=None, leave=False)
    for step in progress:
        done = step + 1
        _set_learning_rate(optimizer, config, step)
        out = loss_fn(model, data.sample(config.batch_size, generator), generator)
        total = out["loss"].mean()
        if torch.isfinite(total):
            bad_steps = 0
            grad_norm = _update(model, optimizer, total, config.grad_clip)
            if ema is not None:
                ema.update(model)
            _accumulate(running, out, grad_norm)
        else:
            bad_steps += 1
            log.warning("step %d: non-finite loss, update skipped (%d in a row)", done, bad_steps)
            if bad_steps >= MAX_BAD_STEPS:
                raise BoltzclfError(f"training diverged: {bad_steps} consecutive non-finite losses at step {done}")
        if (done % config.log_every == 0 or done == config.steps) and running:
            record = _append_log(out_dir / "metrics.jsonl", done, running)
            progress.set_postfix(loss=f"{record['loss']:.4f}")
            running = {}
        if done % config.checkpoint_every == 0 or done == config.steps:
            checkpoint.save(ckpt_path, config=resolved_config, step=done, model=model, ema=ema,
                            optimizer=optimizer, generator=generator)
        if on_step is not None:
            on_step(done)
    progress.close()
    return ema.shadow if ema is not None else model


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


def _resume(path: Path, model, ema, optimizer, generator) -> int:
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
    if saved_device != generator.device.type:
        raise CheckpointError(f"{path}: the run was trained on {saved_device}; resume it with --device "
                              f"{saved_device} (exact resume needs the same device's random stream)")
    generator.set_state(state["rng"]["generator"])
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


def _append_log(path: Path, step: int, running: dict) -> dict:
    """Append the means of the accumulated values as one JSON line; returns the record."""
    n = running["n"]
    record = {"step": step, **{k: v / n for k, v in running.items() if k != "n"}}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    return record


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
