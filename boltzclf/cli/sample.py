"""``boltzclf sample RUN_DIR --sampler NAME --n N --out DIR``: sample a trained energy."""
from __future__ import annotations

import argparse
import dataclasses
import math

from boltzclf.cli.common import add_device_argument, device_from, print_results, seed
from boltzclf.core import distributed
from boltzclf.core.config import from_mapping
from boltzclf.core.errors import ConfigError
from boltzclf.pipelines import sampling

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(sampling.SampleConfig)}

#: Checks made here so the message names the option at fault: SampleConfig checks step_size, dt and
#: friction together (under step_size), and no_resample_last with mcmc_steps, and divides by groups.
_OPTION_CHECKS = (
    (("step_size", "dt", "friction"), lambda v: math.isfinite(v) and v > 0, "must be a positive finite number"),
    (("groups",), lambda v: v >= 1, "must be >= 1"),
    (("no_resample_last", "mcmc_steps"), lambda v: v >= 0, "must be >= 0"),
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="sample a trained run (SMC, AIS, ancestral, probability-flow ODE, Langevin, replica exchange)",
        description=(
            "Sample the energy of RUN_DIR (a 'boltzclf train' run or one method of a workflow). "
            "'smc' and 'ais' walk the level path down to the run's true target (--target exact) or the "
            "model's own first level (--target model); 'ode' weights probability-flow samples by the "
            "true density; 'langevin' runs on U(t_0, .) (or the true energy); 'replica' exchanges between "
            "levels with the true density at level 0; 'ancestral' is the "
            "unweighted reverse diffusion. Writes DIR/samples.npz (samples, log_weights, ancestors), "
            "diagnostics.json, results.json and ess.png; re-running the same command reuses finished output."
        ),
    )
    parser.add_argument("run_dir", help="trained run directory (holds checkpoint.pt)")
    parser.add_argument("--sampler", required=True, choices=sampling.SAMPLERS)
    parser.add_argument("--n", "--n-samples", dest="n", type=int, default=_DEFAULTS["n"],
                        help="samples / particles / walkers (default 4096; under torchrun write --n-samples, "
                        "which torchrun's own options do not swallow)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--target", choices=("exact", "model"), default="exact",
                        help="final density: the run's true target (default) or the learned model itself")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--levels", type=int, default=0,
                        help="levels of the path (log-SNR spaced over the model's range; 0 = the model's grid)")
    parser.add_argument("--kernel", choices=("ddpm", "ei"), default="ddpm", help="reverse kernel")
    parser.add_argument("--posterior-variance", choices=("isotropic", "hessian"), default="isotropic",
                        help="ddpm kernel: Var(x0 | x_t) from sigma_data (isotropic) or the Hessian (small D)")
    parser.add_argument("--groups", type=int, default=_DEFAULTS["groups"],
                        help="independent SMC groups for the log Z error bar")
    parser.add_argument("--resample-threshold", type=float, default=_DEFAULTS["resample_threshold"])
    parser.add_argument("--no-resample-last", type=int, default=0, help="no resampling in the last M moves")
    parser.add_argument("--mcmc-steps", type=int, default=0, help="MALA moves per SMC level")
    parser.add_argument("--bridge-levels", type=int, default=0,
                        help="smc: anneal from the learned first level to the exact target over this many levels, "
                             "with the --mcmc-steps MALA moves there")
    parser.add_argument("--mcmc-on-path", action="store_true",
                        help="smc with --bridge-levels: the MALA moves at every level of the path too")
    parser.add_argument("--step-size", type=float, default=_DEFAULTS["step_size"], help="MALA step size h")
    parser.add_argument("--langevin-steps", type=int, default=_DEFAULTS["langevin_steps"])
    parser.add_argument("--integrator", choices=("mala", "baoab", "ghmc"), default=_DEFAULTS["integrator"])
    parser.add_argument("--dt", type=float, default=_DEFAULTS["dt"], help="Langevin time step (baoab, ghmc)")
    parser.add_argument("--friction", type=float, default=_DEFAULTS["friction"], help="Langevin friction")
    parser.add_argument("--record-every", type=int, default=0,
                        help="langevin: keep every K-th step of every walker (0 = only the last step)")
    parser.add_argument("--start", choices=("ancestral", "smc"), default="ancestral",
                        help="langevin: start from ancestral samples or from SMC samples of the model's own density")
    parser.add_argument("--start-particles", type=int, default=_DEFAULTS["start_particles"],
                        help="langevin --start smc: SMC particles resampled to the walkers")
    parser.add_argument("--ode-steps", type=int, default=0, help="RK4 steps of the ODE (0 = one per level)")
    parser.add_argument("--walkers", type=int, default=_DEFAULTS["walkers"], help="replica: walkers per level")
    parser.add_argument("--warmup", type=int, default=_DEFAULTS["warmup"], help="replica: adaptation steps")
    add_device_argument(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    values = {name: getattr(args, name) for name in _DEFAULTS}
    for keys, ok, problem in _OPTION_CHECKS:
        for key in keys:
            if not ok(values[key]):
                raise ConfigError(f"--{key.replace('_', '-')}: {problem}, got {values[key]}")
    try:
        config = from_mapping(sampling.SampleConfig, values, "options")
    except ConfigError as exc:  # "options: some_key: problem" -> "--some-key: problem"
        key, _, problem = str(exc).removeprefix("options: ").partition(": ")
        raise ConfigError(f"--{key.replace('_', '-')}: {problem}") from None
    summary = sampling.run(args.run_dir, config, args.out, distributed.init_from_environment(device_from(args)))
    if distributed.is_main():
        print_results(summary)
        print(f"wrote {args.out}/samples.npz, diagnostics.json, results.json and ess.png")
    return 0
