"""``boltzclf evaluate RUN_DIR --out DIR``: metrics of a trained model against its exact target."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from boltzclf.cli.common import add_device_argument, device_from, positive_int, print_results, seed
from boltzclf.core import atomic, rundir
from boltzclf.core.config import from_mapping, to_dict
from boltzclf.core.errors import ConfigError
from boltzclf.pipelines.experiment import evaluate_experiment, load_trained
from boltzclf.training.config import EvaluationConfig

#: Options that override keys of the run's ``evaluation`` section.
_OVERRIDES = {"n_samples": "--n-samples", "seed": "--seed"}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a trained run directory",
        description=(
            "Load RUN_DIR/checkpoint.pt (EMA weights when present) and compute the classification "
            "loss over the grid (model and exact), Fisher divergence, ESS and R² per level and the "
            "mode-weight error (molecular runs: validation losses); writes DIR/results.json, "
            "DIR/config.json and DIR/metadata.json. DIR must be new or hold this same evaluation: "
            "another run's directory is refused, so nothing is overwritten."
        ),
    )
    parser.add_argument("run_dir", help="directory written by 'boltzclf train'")
    parser.add_argument("--out", required=True, help="directory for results.json")
    parser.add_argument("--n-samples", type=positive_int, default=None, help="exact samples per level (default: config)")
    parser.add_argument("--seed", type=seed, default=None, help="evaluation seed (default: config)")
    add_device_argument(parser)
    parser.set_defaults(handler=main)


def _evaluation(config, args: argparse.Namespace):
    """The run's evaluation settings with the options' overrides, validated (errors name the option)."""
    overrides = {key: getattr(args, key) for key in _OVERRIDES if getattr(args, key) is not None}
    try:
        return from_mapping(EvaluationConfig, {**to_dict(config.evaluation), **overrides}, "options")
    except ConfigError as exc:  # "options: seed: problem" -> "--seed: problem"
        key, _, problem = str(exc).removeprefix("options: ").partition(": ")
        raise ConfigError(f"{_OVERRIDES.get(key, key)}: {problem}") from None


def main(args: argparse.Namespace) -> int:
    device = device_from(args)
    model, config = load_trained(args.run_dir, device)
    config = dataclasses.replace(config, evaluation=_evaluation(config, args))
    resolved = {"command": "evaluate", "run": str(Path(args.run_dir).resolve()),
                "evaluation": to_dict(config.evaluation)}
    out = rundir.prepare(args.out, resolved, schema={"evaluation": type(config.evaluation)},
                         seed=config.evaluation.seed, device=str(device),
                         inputs=(Path(args.run_dir) / "checkpoint.pt",))
    results = evaluate_experiment(model, config)
    atomic.write_json(out / "results.json", results)
    print_results({k: v for k, v in results.items() if not isinstance(v, list)})
    return 0
