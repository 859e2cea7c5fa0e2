"""``boltzclf train CONFIG.yaml --out DIR``: train one energy model on an analytic target or a molecular trajectory."""
from __future__ import annotations

import argparse

from boltzclf.cli.common import add_device_argument, check_processes, check_warm_starts, device_from, print_results
from boltzclf.core import distributed
from boltzclf.core.config import from_mapping, load_yaml
from boltzclf.pipelines.experiment import run_experiment
from boltzclf.training.config import ExperimentConfig


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one model from an experiment YAML",
        description=(
            "Train an energy model U(t, x) from an experiment YAML with sections target (an analytic "
            "mixture) or data (a molecule: system spec + trajectory, see the README), end_target "
            "(interpolants only), process, grid, model, loss, training, evaluation "
            "(see examples/train_two_modes.yaml; every key is validated). Writes "
            "DIR/config.json, metadata.json, checkpoint.pt, metrics.jsonl and results.json; "
            "re-running the same command resumes from the last checkpoint. Under torchrun "
            "(torchrun --nproc_per_node P -m boltzclf train ...) the P processes share each batch "
            "(training.shards, a multiple of P, fixes the random streams) and rank 0 writes."
        ),
    )
    parser.add_argument("config", help="experiment YAML file")
    parser.add_argument("--out", required=True, help="run directory")
    add_device_argument(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    config = from_mapping(ExperimentConfig, load_yaml(args.config), args.config)
    device = distributed.init_from_environment(device_from(args))
    check_processes(config, args.config)
    check_warm_starts(config, args.config)
    results = run_experiment(config, args.out, device)
    if distributed.is_main():
        print_results({k: v for k, v in results.items() if not isinstance(v, list)})
    return 0
