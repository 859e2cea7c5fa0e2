"""Composition section of the ``smc_comparison`` workflow: product and mixture of two learned energies.

For each method, the model trained on the ``base`` target is composed

* with itself as a product, p_θ(t)², whose t_0 end is the low-temperature density ∝ exp(−2U_θ) (mode
  masses ∝ w_k² for separated modes of equal shape: 4:1 for a 2:1 target), and
* with a model trained on the ``partner`` mixture (same experiment otherwise) as a mixture with
  ``mixture_weights``, which needs both models' learned normalisers f.

SMC samples the composition of the *models* at their first level t_0 (no true density enters), so the
result measures the learned energies themselves. The truth is the same composition of the exact
marginals at t_0 in closed form (products and mixtures of Gaussian mixtures are Gaussian mixtures);
a mode is a component of that exact composition. Under ``torchrun`` every process trains and rank 0
alone samples (the others get None per method).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from boltzclf.core import atomic, distributed
from boltzclf.diffusion.grids import log_snr_grid
from boltzclf.evaluation.weighted_samples import weighted_sample_metrics
from boltzclf.pipelines.experiment import train_experiment
from boltzclf.sampling.composition import MixturePath, ProductPath
from boltzclf.sampling.kernels import DiffusionKernels
from boltzclf.sampling.smc import smc
from boltzclf.targets.gmm import mixture_of_mixtures, product_of_mixtures
from boltzclf.training.config import build_target

#: The product's walk starts at moderate noise (see :class:`~boltzclf.sampling.composition.ProductPath`).
PRODUCT_T_MAX = 0.3
PRODUCT_LEVELS = 96


def run_composition(workflow, out: Path, device) -> dict:
    """``{method: {"product": {...}, "mixture": {...}}}`` with masses, exact masses, log Z and ESS."""
    options = workflow.composition
    base = workflow.targets[options.base]
    results = {}
    for method, loss in workflow.methods.items():
        record_path = out / f"{method}.json"
        if record_path.exists():
            results[method] = json.loads(record_path.read_text())
            continue
        config_a = dataclasses.replace(base, loss=loss)
        config_b = dataclasses.replace(config_a, target=options.partner)
        model_a = train_experiment(config_a, out.parent / options.base / method, device).eval()
        model_b = train_experiment(config_b, out / f"{method}_partner", device).eval()
        results[method] = distributed.on_main(
            lambda: _compose(model_a, model_b, config_a, config_b, workflow, record_path, device), share=False)
    return results


def _compose(model_a, model_b, config_a, config_b, workflow, record_path: Path, device) -> dict:
    t0 = float(model_a.levels[0])
    exact_a = build_target(config_a.target).noised(model_a.process, t0)
    exact_b = build_target(config_b.target).noised(model_a.process, t0)
    record = {
        "product": _product(model_a, exact_a, workflow.smc, device),
        "mixture": _mixture(model_a, model_b, exact_a, exact_b, workflow.composition.mixture_weights,
                            workflow.smc, device),
    }
    atomic.write_json(record_path, record)
    return record


def _run(path, exact, log_z_exact: float, options, device) -> dict:
    kernels = DiffusionKernels(path.process, path.times, path.space, path.space.sigma_data, options.kernel,
                               options.posterior_variance)
    generator = torch.Generator(device=device).manual_seed(options.seed)
    result = smc(path, kernels, options.settings(), generator, dtype=next(path.space.parameters()).dtype,
                 device=device)
    record = weighted_sample_metrics(result.samples, result.log_weights, result.ancestors, exact, options.seed)
    record.update({"mode_weights_exact": exact.weights.tolist(), "log_z": result.log_z, "log_z_se": result.log_z_se,
                   "log_z_exact": log_z_exact, "ess_final": result.ess_final, "ess_min": float(result.ess.min())})
    return record


def _product(model, exact_marginal, options, device) -> dict:
    times = log_snr_grid(model.process, float(model.levels[0]), PRODUCT_T_MAX, PRODUCT_LEVELS)
    exact, log_z = product_of_mixtures(exact_marginal, exact_marginal)
    return _run(ProductPath(model, model, times=times), exact, log_z, options, device)


def _mixture(model_a, model_b, exact_a, exact_b, weights, options, device) -> dict:
    exact = mixture_of_mixtures(exact_a, exact_b, weights)
    return _run(MixturePath(model_a, model_b, weights=weights), exact, 0.0, options, device)
