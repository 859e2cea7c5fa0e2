"""Training-step cost of the molecular energy networks on alanine dipeptide (22 atoms), side by side.

One step = DSM (k = 2 replicas) or binary DiffCLF loss on a batch of centred frames, backward through the
score (double backward) and an Adam update, for the invariant pairwise potential and the EGNN at the
sizes of the workflow's cpu and gpu presets. Frames are the native structure jittered by 0.01 nm (the
cost does not depend on the data). Prints a JSON table (seconds per step, steps per second, ratio to
the pairwise cpu-preset DSM step) and writes it to ``--out``.

    python benchmarks/molecular_training.py --out benchmarks/results/molecular_training_2cpu.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from boltzclf.losses import LossConfig, build_loss
from boltzclf.openmm.system import load_system
from boltzclf.training.config import ExperimentConfig, GridConfig, ModelConfig, ProcessConfig, build_model
from boltzclf.training.molecular_data import MolecularDataConfig, describe_molecule
from boltzclf.models.pairwise import pair_statistics

REPO = Path(__file__).resolve().parents[1]
SPEC = str(REPO / "systems" / "alanine_dipeptide_implicit.yaml")

CASES = {
    "pairwise 256x3 (cpu preset)": ModelConfig(kind="pairwise", hidden=256, n_layers=3, time_dim=64),
    "egnn 64x4": ModelConfig(kind="egnn", hidden=64, n_layers=4, time_dim=64),
    "egnn 128x5 (gpu preset)": ModelConfig(kind="egnn", hidden=128, n_layers=5, time_dim=128),
}
LOSSES = {"dsm": LossConfig(kind="dsm", k=2), "diffclf": LossConfig(kind="diffclf", k=2, pairs="adjacent")}


def _time_steps(model, loss, frames: torch.Tensor, batch: int, steps: int, generator) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    for i in range(steps + 1):
        if i == 1:
            started = time.perf_counter()  # the first step warms allocator and caches
        x = frames[torch.randint(frames.shape[0], (batch,), generator=generator)]
        out = loss(model, (x,), generator)
        optimizer.zero_grad()
        out["loss"].mean().backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    system = load_system(SPEC)
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(system.positions[None] + 0.01 * rng.standard_normal((4096, 22, 3)))
    frames = (frames - frames.mean(1, keepdim=True)).float().to(device)
    molecule = describe_molecule(system, None, np.arange(22), 0.17)
    mean, std = pair_statistics(frames.double().cpu(), 0.17)
    molecule = type(molecule)(molecule.atom_types, molecule.bonds, 0.17, mean, std)
    rows = []
    for name, model_config in CASES.items():
        config = ExperimentConfig(data=MolecularDataConfig(SPEC, "unused", sigma_data=0.17),
                                  process=ProcessConfig(kind="edm"),
                                  grid=GridConfig(kind="karras", n_levels=64, t_min=2e-3, t_max=2.0), model=model_config)
        for loss_name, loss_config in LOSSES.items():
            torch.manual_seed(0)
            model = build_model(config, molecule).to(device)
            seconds = _time_steps(model, build_loss(loss_config), frames, args.batch, args.steps,
                                  torch.Generator(device=device).manual_seed(0))
            rows.append({"network": name, "loss": loss_name, "s_per_step": seconds, "steps_per_s": 1.0 / seconds,
                         "parameters": sum(p.numel() for p in model.parameters())})
    base = rows[0]["s_per_step"]
    for row in rows:
        row["cost_vs_pairwise_dsm"] = row["s_per_step"] / base
    result = {"batch": args.batch, "steps_timed": args.steps, "device": str(device), "threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "rows": rows}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
