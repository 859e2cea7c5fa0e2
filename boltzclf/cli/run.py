"""``boltzclf run WORKFLOW.yaml --out DIR``: run a declarative end-to-end workflow."""
from __future__ import annotations

import argparse

from boltzclf.cli.common import add_device_argument, check_processes, check_warm_starts, device_from, print_results
from boltzclf.core import distributed
from boltzclf.core.config import apply_preset, from_mapping, load_yaml
from boltzclf.core.errors import ConfigError
from boltzclf.pipelines import boltzmann_generator, compare, reference, smc_workflow, solvation

WORKFLOWS = {
    "compare_losses": (compare.CompareLossesWorkflow, compare.run),
    "smc_comparison": (smc_workflow.SMCComparisonWorkflow, smc_workflow.run),
    "reference_ensemble": (reference.ReferenceEnsembleWorkflow, reference.run),
    "boltzmann_generator": (boltzmann_generator.BoltzmannGeneratorWorkflow, boltzmann_generator.run),
    "solvation": (solvation.SolvationWorkflow, solvation.run),
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a workflow YAML (e.g. workflows/gmm_mode_blindness.yaml)",
        description=(
            "Run a declarative workflow. The YAML's 'workflow' key picks the pipeline "
            f"({', '.join(WORKFLOWS)}); 'presets' holds named overrides chosen with --preset. "
            "Outputs: DIR/config.json, DIR/metadata.json, DIR/results.json, DIR/report.png and one "
            "sub-directory per trained model. Re-running the same command resumes a killed run. Under "
            "torchrun (torchrun --nproc_per_node P -m boltzclf run ...) training stages run on DDP and batched "
            "dynamics share their walkers over the P processes; the other stages run on rank 0, which "
            "writes every output."
        ),
    )
    parser.add_argument("workflow", help="workflow YAML file")
    parser.add_argument("--out", required=True, help="output directory (created; resumed if it holds this run)")
    parser.add_argument("--preset", default=None, help="named preset from the YAML's 'presets' mapping")
    add_device_argument(parser)
    parser.set_defaults(handler=main)


def load_workflow(path: str, preset: str | None):
    """Validate a workflow file (with an optional preset) into its config object and runner."""
    data = apply_preset(load_yaml(path), preset, path)
    kind = data.get("workflow")
    if kind not in WORKFLOWS:
        raise ConfigError(f"{path}: 'workflow' must be one of {', '.join(WORKFLOWS)}, got {kind!r}")
    config_type, runner = WORKFLOWS[kind]
    return from_mapping(config_type, data, path), runner


def main(args: argparse.Namespace) -> int:
    config, runner = load_workflow(args.workflow, args.preset)
    device = distributed.init_from_environment(device_from(args))
    check_processes(config, args.workflow)
    check_warm_starts(config, args.workflow)
    results = runner(config, args.out, device)
    if not distributed.is_main():
        return 0
    print_results(results)
    print(f"wrote {args.out}/results.json and {args.out}/report.png")
    return 0
