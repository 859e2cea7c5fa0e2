"""BAOAB, GHMC and MALA on analytic, molecular and learned energies, checked the openmmtools way.

Every statistical check estimates a mean per walker with its statistical inefficiency (pymbar) and
requires |estimate − exact| ≤ 6 standard errors. Chains start away from the target (no exact samples
as starting points) so a sampler that does not move fails.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pymbar.timeseries import statistical_inefficiency

from boltzclf.diffusion import VariancePreserving, log_snr_grid
from boltzclf.energy.units import kt_kj_per_mol
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.sampling import mcmc
from boltzclf.sampling.langevin import baoab_step, init_state, kinetic_energy, make_dynamics, run_langevin
from boltzclf.sampling.mcmc import adapt_step_size, mala_step, target_log_density
from boltzclf.targets.gmm import GaussianMixture, two_modes

ALDP = Path(__file__).resolve().parents[2] / "systems" / "alanine_dipeptide_vacuum.yaml"
F64 = torch.float64


def mean_and_stderr(series: torch.Tensor) -> tuple[float, float]:
    """Mean of ``series`` ``(n_frames, B)`` over walkers and frames, and its standard error.

    Each walker's time average has variance var_i·g_i/n (g_i: pymbar's statistical inefficiency; a
    walker that never moved counts as one sample); walkers are independent.
    """
    a = series.detach().to(F64).cpu().numpy()
    n, walkers = a.shape
    var = a.var(0, ddof=1)
    g = np.array([statistical_inefficiency(a[:, i]) if var[i] > 0 else n for i in range(walkers)])
    return float(a.mean()), float(np.sqrt((var * g / n).sum()) / walkers)


def assert_close_statistically(series: torch.Tensor, exact: float, k: float = 6.0) -> None:
    estimate, error = mean_and_stderr(series)
    assert abs(estimate - exact) <= k * error, f"estimate {estimate:.5f} ± {error:.5f}, exact {exact:.5f}"


class Quadratic:
    """u(x) = Σ k x²/(2 kT) per coordinate (k in kJ/mol/nm², kT in kJ/mol), cheap closed-form forces."""

    def __init__(self, event_shape, k: float, kT: float = 1.0):
        self.event_shape, self.k, self.kT = tuple(event_shape), k, kT

    def energy_and_force(self, x):
        return 0.5 * self.k / self.kT * x.flatten(1).pow(2).sum(1), -self.k / self.kT * x

    def energy(self, x):
        return self.energy_and_force(x)[0]

    def force(self, x):
        return self.energy_and_force(x)[1]


class Quartic:
    """u(x) = x⁴/4 in 1-D: ⟨x²⟩ = 2Γ(3/4)/Γ(1/4), strongly non-Gaussian."""

    event_shape = (1,)

    def energy_and_force(self, x):
        return x[:, 0].pow(4) / 4, -x.pow(3)

    def energy(self, x):
        return self.energy_and_force(x)[0]

    def force(self, x):
        return self.energy_and_force(x)[1]


def anisotropic_gaussian() -> GaussianMixture:
    return GaussianMixture(torch.tensor([1.0], dtype=F64), torch.tensor([[0.5, -1.0]], dtype=F64),
                           torch.tensor([[1.0, 0.09]], dtype=F64))


# ----- the MALA step -----------------------------------------------------------------------------------
def test_mala_step_contract_per_walker_steps_and_reproducibility():
    target = Quadratic((3,), k=1.0)
    log_density = target_log_density(target)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    logp, grad = log_density(x)
    steps = torch.tensor([1e-3, 1e-2, 0.1, 1.0, 10.0], dtype=F64)
    a = mala_step(log_density, x, logp, grad, steps, torch.Generator().manual_seed(1))
    b = mala_step(log_density, x, logp, grad, steps, torch.Generator().manual_seed(1))
    assert a.x.shape == x.shape and a.accepted.shape == (5,) and a.accepted.dtype == torch.bool
    assert torch.equal(a.x, b.x) and torch.equal(a.accepted, b.accepted)
    torch.testing.assert_close(a.logp, log_density(a.x)[0])
    torch.testing.assert_close(a.grad, log_density(a.x)[1])
    rejected = ~a.accepted[:, None]
    assert torch.equal(torch.where(rejected, a.x, x), x)
    # On N(0, I), MALA's log-ratio is known in closed form: check it for every walker.
    h = steps[:, None]
    y = x + h * grad + torch.sqrt(2 * h) * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    forward = -((y - x + h * x) ** 2).sum(1) / (4 * steps)
    reverse = -((x - y + h * y) ** 2).sum(1) / (4 * steps)
    expected = -0.5 * (y**2).sum(1) + 0.5 * (x**2).sum(1) + reverse - forward
    torch.testing.assert_close(a.log_accept_ratio, expected)


def test_mala_rejects_and_flags_non_finite_proposals():
    class Wall:
        event_shape = (1,)

        def energy(self, x):
            return torch.where(x[:, 0] > 0.2, torch.full_like(x[:, 0], math.nan), 0.5 * x[:, 0] ** 2)

        def force(self, x):
            return -x

    log_density = target_log_density(Wall())
    x = torch.zeros(400, 1, dtype=F64)
    logp, grad = log_density(x)
    result = mala_step(log_density, x, logp, grad, 0.5, torch.Generator().manual_seed(2))
    assert result.nonfinite.any() and not result.accepted[result.nonfinite].any()
    assert torch.isneginf(result.log_accept_ratio[result.nonfinite]).all()
    assert torch.isfinite(result.logp).all() and (result.x <= 0.2).all()


def test_adaptive_mala_counts_only_walkers_inside_the_support():
    """A half-normal target (log-density −inf for x <= 0): walkers outside (zero weight in a confined
    SMC level) accept any proposal that lands inside, so counting them would report about 0.6 here
    where the walkers inside accept almost every small step; the step size adapts to the latter."""
    def log_density(y):
        return torch.where(y[:, 0] > 0, -0.5 * y[:, 0] ** 2, -math.inf), -y

    x = torch.cat([torch.full((2000, 1), 1.0, dtype=F64), torch.full((2000, 1), -0.1, dtype=F64)])
    logp, grad = log_density(x)
    *_, rate, step = mcmc.adaptive_mala_moves(log_density, x, logp, grad, 1, 0.01, torch.Generator().manual_seed(0))
    assert rate > 0.97 and step > 0.01
    dead = torch.full((100, 1), -0.1, dtype=F64)
    *_, rate, step = mcmc.adaptive_mala_moves(log_density, dead, *log_density(dead), 1, 0.01,
                                              torch.Generator().manual_seed(0))
    assert math.isnan(rate) and step == 0.01  # nothing inside: no acceptance to adapt on


def test_adapt_step_size_moves_towards_target_acceptance_and_warmup_only():
    assert adapt_step_size(0.1, 1.0) > 0.1 > adapt_step_size(0.1, 0.0)
    per_walker = adapt_step_size(torch.full((2,), 0.1), torch.tensor([True, False]))
    assert per_walker[0] > 0.1 > per_walker[1]
    result = run_langevin(Quadratic((2,), k=1.0), torch.zeros(256, 2, dtype=F64), 200, "mala", step_size=50.0,
                          warmup=300, adapt=True, generator=torch.Generator().manual_seed(3))
    assert isinstance(result.step_size, torch.Tensor) and result.step_size.shape == (256,)
    assert abs(result.acceptance_rate - 0.574) < 0.1  # from ~0 acceptance at h = 50
    again = run_langevin(Quadratic((2,), k=1.0), torch.zeros(256, 2, dtype=F64), 100, "mala", step_size=50.0,
                         warmup=300, adapt=True, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(again.step_size, result.step_size)  # frozen after warm-up


@pytest.mark.parametrize("integrator", ["baoab", "ghmc", "mala"])
def test_same_seed_same_chain_and_dtype_follows_input(integrator):
    def run(seed):
        return run_langevin(anisotropic_gaussian(), torch.zeros(8, 2), 20, integrator, dt=0.1, step_size=0.01,
                            record_every=5, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0), run(1)
    assert a.samples.shape == (4, 8, 2) and a.samples.dtype == torch.float32
    assert a.final_state.x.dtype == torch.float32 and a.energies.dtype == F64
    assert torch.equal(a.samples, b.samples) and not torch.equal(a.samples, c.samples)
    assert a.n_force_evaluations == 21 and (a.kinetic is None) == (integrator == "mala")


# ----- exact moments on analytic targets -------------------------------------------------------------
@pytest.mark.parametrize("integrator, options", [
    ("mala", {"step_size": 0.05}),
    ("ghmc", {"dt": 0.2, "friction": 2.0}),
    ("baoab", {"dt": 0.2, "friction": 2.0}),
])
def test_exact_moments_on_anisotropic_gaussian(integrator, options):
    target = anisotropic_gaussian()
    result = run_langevin(target, torch.zeros(256, 2, dtype=F64), 500, integrator, warmup=200,
                          generator=torch.Generator().manual_seed(4), **options)
    assert result.samples.shape == (500, 256, 2) and result.energies.shape == (500, 256)
    assert result.n_force_evaluations == 701 and result.n_nonfinite == 0
    torch.testing.assert_close(result.energies, target.energy(result.samples.flatten(0, 1)).reshape(500, 256))
    mean, var = target.moments()
    for d in range(2):
        assert_close_statistically(result.samples[..., d], float(mean[d]))
        assert_close_statistically((result.samples[..., d] - mean[d]) ** 2, float(var[d]))
    if integrator != "baoab":
        assert 0.5 < result.acceptance_rate < 1.0


def test_mala_with_large_steps_recovers_mode_masses_of_a_mixture():
    weights, means, std = torch.tensor([0.7, 0.3], dtype=F64), torch.tensor([-1.0, 1.0], dtype=F64), 0.5
    target = GaussianMixture(weights, means[:, None], torch.full((2, 1), std**2, dtype=F64))
    # every walker starts in the light mode: the heavy mode's mass must be found by crossing over
    result = run_langevin(target, torch.full((512, 1), 1.0, dtype=F64), 600, "mala", step_size=0.3,
                          warmup=200, generator=torch.Generator().manual_seed(5))
    normal = torch.distributions.Normal(means, std)
    exact_left = float((weights * normal.cdf(torch.zeros((), dtype=F64))).sum())
    assert_close_statistically((result.samples[..., 0] < 0).to(F64), exact_left)
    assert_close_statistically(result.samples[..., 0], float(weights @ means))


def test_wrong_reverse_proposal_density_is_detected(monkeypatch):
    """A MALA whose reverse density omits the gradient drift is biased on x⁴/4; ours is not."""
    exact = 2 * math.gamma(0.75) / math.gamma(0.25)
    x0 = torch.linspace(-1.5, 1.5, 512, dtype=F64)[:, None]

    def second_moment():
        result = run_langevin(Quartic(), x0, 400, "mala", step_size=0.5, warmup=100,
                              generator=torch.Generator().manual_seed(6))
        return mean_and_stderr(result.samples[..., 0] ** 2)

    estimate, error = second_moment()
    assert abs(estimate - exact) <= 6 * error
    correct = mcmc._log_proposal
    monkeypatch.setattr(mcmc, "_log_proposal",
                        lambda to, start, grad, h, project: correct(to, start, torch.zeros_like(grad), h, project))
    estimate, error = second_moment()
    assert abs(estimate - exact) > 6 * error


# ----- units: masses and kT ----------------------------------------------------------------------------
def test_baoab_harmonic_with_masses_and_temperature_is_equipartitioned():
    masses = torch.tensor([1.008, 12.01, 16.0], dtype=F64)
    temperature, k = 300.0, 1000.0  # K, kJ/mol/nm²
    kT = kt_kj_per_mol(temperature)
    target = Quadratic((3, 3), k=k, kT=kT)
    x0 = torch.zeros(128, 3, 3, dtype=F64)
    dynamics = make_dynamics(x0, dt=0.002, friction=10.0, temperature=temperature, masses=masses)
    generator = torch.Generator().manual_seed(7)
    state = init_state(target, x0, dynamics, generator)
    positions, kinetic, reported = [], [], []
    for step in range(1800):
        state, info = baoab_step(target, state, dynamics, generator)
        assert not info.nonfinite.any() and info.accepted is None
        if step >= 300:
            positions.append(state.x)
            kinetic.append(0.5 * masses[:, None] * state.v**2 / kT)
            reported.append(info.kinetic)
    x, kin = torch.stack(positions), torch.stack(kinetic)  # (n, B, 3 atoms, 3)
    for atom in range(3):
        assert_close_statistically(x[:, :, atom].pow(2).mean(-1), kT / k)  # nm²
        assert_close_statistically(kin[:, :, atom].sum(-1), 1.5)  # kT, three degrees of freedom
    assert_close_statistically(torch.stack(reported), 4.5)
    torch.testing.assert_close(kinetic_energy(state.v, dynamics), (0.5 * masses[:, None] * state.v**2).sum((1, 2)) / kT)


def test_baoab_stops_and_reports_walkers_with_non_finite_energies_ghmc_rejects_them():
    class Cliff(Quadratic):
        def energy_and_force(self, x):
            energy, force = super().energy_and_force(x)
            return torch.where(x[:, 0] > 2.5, torch.full_like(energy, math.inf), energy), force

    x0 = torch.zeros(64, 1, dtype=F64)
    baoab = run_langevin(Cliff((1,), k=1.0), x0, 100, "baoab", dt=0.5, friction=1.0,
                         generator=torch.Generator().manual_seed(8))
    failed = baoab.nonfinite_walkers
    assert 0 < int(failed.sum()) < 64 and baoab.n_nonfinite == int(failed.sum())
    assert torch.isinf(baoab.energies[-1, failed]).all() and torch.isfinite(baoab.energies[:, ~failed]).all()
    dead = torch.isinf(baoab.energies)  # (n_frames, B): once failed, a walker stays stopped and flagged
    assert torch.equal(dead[-1], failed) and (dead[1:] >= dead[:-1]).all()
    early = dead[-2]
    assert early.any() and torch.equal(baoab.samples[-1, early], baoab.samples[-2, early])  # kept, not dropped
    ghmc = run_langevin(Cliff((1,), k=1.0), x0, 100, "ghmc", dt=0.5, friction=1.0,
                        generator=torch.Generator().manual_seed(8))
    assert ghmc.n_nonfinite > 0 and torch.isfinite(ghmc.energies).all() and (ghmc.samples <= 2.5).all()


# ----- the torch force field ---------------------------------------------------------------------------
def _aldp_kinetic_temperature(n_warmup: int, n_steps: int, friction: float):
    from boltzclf.openmm import load_system

    system = load_system(ALDP, backend="torch", device="cpu")
    x0 = torch.tensor(system.positions, dtype=F64).expand(16, -1, -1).clone()
    result = run_langevin(system, x0, n_steps, "baoab", dt=0.001, friction=friction,
                          temperature=system.temperature, masses=system.masses, remove_com=True,
                          warmup=n_warmup, generator=torch.Generator().manual_seed(9))
    assert result.n_dof == 3 * 22 - 3
    assert result.n_nonfinite == 0 and torch.isfinite(result.energies).all()
    momentum = (torch.tensor(system.masses)[:, None] * result.final_state.v).sum(1)
    assert momentum.abs().max() < 1e-10  # centre-of-mass motion removed
    temperature = 2 * result.kinetic * system.temperature / result.n_dof  # K, per frame and walker
    assert_close_statistically(temperature, system.temperature)


def test_baoab_on_torch_force_field_aldp_vacuum_holds_300_kelvin():
    _aldp_kinetic_temperature(n_warmup=150, n_steps=300, friction=50.0)


@pytest.mark.slow
def test_baoab_on_torch_force_field_aldp_vacuum_weak_coupling():
    _aldp_kinetic_temperature(n_warmup=2000, n_steps=5000, friction=2.0)


# ----- a learned energy --------------------------------------------------------------------------------
def test_mala_on_learned_energy_at_first_level_matches_exact_marginal():
    process = VariancePreserving()
    start = two_modes(2)
    model = MixtureMarginalEnergy(start, process, log_snr_grid(process, 1e-3, 0.999, 16))
    t = float(model.levels[0])
    marginal = start.noised(process, t)
    # walkers placed exactly at the mode centres in the exact 2:1 proportion; the spread must come
    # from sampling (the modes are too far apart to cross at this noise level)
    x0 = torch.cat([marginal.means[0].expand(64, 2), marginal.means[1].expand(32, 2)]).clone()
    result = run_langevin(model.at_time(t), x0, 400, "mala", step_size=1e-3, warmup=100,
                          generator=torch.Generator().manual_seed(10))
    assert 0.5 < result.acceptance_rate < 1.0
    mode = marginal.responsibilities(result.samples.flatten(0, 1)).argmax(1).reshape(400, 96)
    assert torch.equal(mode, (torch.arange(96) >= 64).long().expand(400, 96))  # mode masses conserved
    mean, _ = marginal.moments()
    centre = marginal.means[(torch.arange(96) >= 64).long()]  # (B, 2) each walker's mode mean
    for d in range(2):
        assert_close_statistically(result.samples[..., d], float(mean[d]))
        # within-mode variance: the part of the spread that only the sampler can produce
        assert_close_statistically((result.samples[..., d] - centre[:, d]) ** 2, float(marginal.variances[0, d]))
    torch.testing.assert_close(marginal.variances[0], marginal.variances[1])
