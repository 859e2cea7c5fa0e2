"""Gaussian mixtures of centred particle configurations, checked against an orthonormal basis of the subspace.

With Q ``(3n, 3(n−1))`` an orthonormal basis of the centred subspace (built here from the centring
projector, independently of the library), y = Qᵀ vec(x) are coordinates on the subspace and the particle
mixture is the flat mixture with means Qᵀ vec(μ_k) and variances v_k in those coordinates. The flat
implementation is the oracle: densities counting 3n instead of 3(n−1) dimensions, densities that see the
centre of geometry, scores that are not projected or uncentred samples all break these identities.
"""
import math

import pytest
import torch

from boltzclf.diffusion import EDM, StochasticInterpolant, VariancePreserving
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.targets.gmm import GaussianMixture, interpolant_marginal, marginal_log_prob, marginal_score

N_ATOMS = 5
DOF = 3 * (N_ATOMS - 1)


def _subspace_basis(n_atoms: int) -> torch.Tensor:
    """Orthonormal basis ``(3n, 3(n−1))`` of {vec(x): Σ_i x_i = 0}, vec row-major over (atom, xyz)."""
    projector = torch.eye(3 * n_atoms, dtype=torch.float64) - torch.kron(
        torch.full((n_atoms, n_atoms), 1.0 / n_atoms, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    evals, evecs = torch.linalg.eigh(projector)
    assert torch.allclose(evals[:3], torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(evals[3:], torch.ones(3 * n_atoms - 3, dtype=torch.float64))
    return evecs[:, 3:]


def _pair(n_atoms=N_ATOMS, seed=0):
    """A 3-component particle mixture (unequal variances) and its flat image in subspace coordinates."""
    generator = torch.Generator().manual_seed(seed)
    means = 3.0 * torch.randn(3, n_atoms, 3, generator=generator, dtype=torch.float64)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    variances = torch.tensor([0.4, 1.0, 2.5], dtype=torch.float64)
    particles = GaussianMixture.on_centred_subspace(weights, means, variances)
    basis = _subspace_basis(n_atoms)
    flat = GaussianMixture(weights, particles.means.flatten(1) @ basis,
                           variances[:, None].expand(3, basis.shape[1]).clone())
    return particles, flat, basis


def _points(n, generator, n_atoms=N_ATOMS):
    """Uncentred points: the densities must ignore the centre of geometry."""
    return 2.0 * torch.randn(n, n_atoms, 3, generator=generator, dtype=torch.float64) + 5.0


def test_geometry_of_a_particle_mixture():
    particles, flat, _ = _pair()
    assert particles.particles and not flat.particles
    assert particles.event_shape == (N_ATOMS, 3) and particles.dim == DOF and flat.dim == DOF
    assert torch.allclose(particles.means.mean(1), torch.zeros(3, 3, dtype=torch.float64), atol=1e-12)
    assert particles.to(dtype=torch.float32).particles


def test_log_prob_and_score_match_the_flat_mixture_in_subspace_coordinates(generator):
    particles, flat, basis = _pair()
    x = _points(64, generator)
    y = x.flatten(1) @ basis
    assert torch.allclose(particles.log_prob(x), flat.log_prob(y), atol=1e-10)
    assert torch.allclose(particles.component_log_probs(x), flat.component_log_probs(y), atol=1e-10)
    expected_score = (flat.score(y) @ basis.T).reshape(x.shape)  # the subspace gradient, embedded
    assert torch.allclose(particles.score(x), expected_score, atol=1e-10)
    assert torch.allclose(particles.force(x), -torch.func.grad(lambda z: particles.energy(z).sum())(x), atol=1e-10)
    # counting all 3n coordinates would shift every log-density by −(3/2) log(2π v_k): the check above sees it
    assert float((particles.log_prob(x) - particles.log_prob(x + torch.tensor([1.0, -2.0, 3.0]))).abs().max()) < 1e-10


@pytest.mark.parametrize("process", [VariancePreserving(), EDM()], ids=["vp", "edm"])
def test_noised_marginals_match_the_flat_mixture_in_subspace_coordinates(process, generator):
    particles, flat, basis = _pair()
    x = _points(64, generator)
    y = x.flatten(1) @ basis
    t = (torch.rand(64, generator=generator, dtype=torch.float64) * 0.9 + 0.05) * (1.0 if process.kind == "vp" else 5.0)
    expected_log_prob = marginal_log_prob(flat, process, t, y)
    assert torch.allclose(marginal_log_prob(particles, process, t, x), expected_log_prob, atol=1e-10)
    expected_score = (marginal_score(flat, process, t, y) @ basis.T).reshape(x.shape)
    assert torch.allclose(marginal_score(particles, process, t, x), expected_score, atol=1e-10)
    noised = particles.noised(process, 0.3)
    assert noised.particles
    assert torch.allclose(noised.log_prob(x), flat.noised(process, 0.3).log_prob(y), atol=1e-10)
    # the exact model is the same density, a particle model on d = 3(n − 1) dimensions
    model = MixtureMarginalEnergy(particles, process, torch.tensor([0.1, 0.5]))
    assert model.particles and model.dim == DOF and model.event_shape == (N_ATOMS, 3)
    assert torch.allclose(model.log_prob_unnormalised(t, x), expected_log_prob, atol=1e-10)
    assert torch.allclose(model.score(t, x), expected_score, atol=1e-10)


def test_samples_are_centred_and_have_the_subspace_spread(generator):
    """Squared distances to the mean average d·v = 3(n − 1)·v (3n·v if the noise were not centred)."""
    n_atoms, v, n = 22, 0.7, 20_000
    mean = torch.randn(1, n_atoms, 3, generator=generator, dtype=torch.float64)
    single = GaussianMixture.on_centred_subspace(torch.ones(1, dtype=torch.float64), mean,
                                                 torch.tensor([v], dtype=torch.float64))
    x = single.sample(n, generator)
    assert x.shape == (n, n_atoms, 3)
    assert float(x.mean(1).abs().max()) < 1e-12
    sq = (x - single.means[0]).flatten(1).pow(2).sum(1) / v  # χ² with d = 63 degrees of freedom
    d = 3 * (n_atoms - 1)
    assert abs(float(sq.mean()) - d) < 4 * math.sqrt(2 * d / n)
    assert abs(float(sq.var()) - 2 * d) < 0.1 * 2 * d
    # component masses of a mixture's samples
    particles, _, _ = _pair()
    labels = particles.responsibilities(particles.sample(n, generator)).argmax(1)
    counts = torch.bincount(labels, minlength=3).double() / n
    assert ((counts - particles.weights).abs() < 4 * (particles.weights * (1 - particles.weights) / n).sqrt()).all()


def test_particle_mixtures_are_validated():
    weights, means = torch.tensor([1.0], dtype=torch.float64), torch.randn(1, 4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="centred"):
        GaussianMixture(weights, means + 1.0, torch.ones(1, 4, 3, dtype=torch.float64), particles=True)
    with pytest.raises(ValueError, match="isotropic"):
        GaussianMixture(weights, means - means.mean(1, keepdim=True), torch.rand(1, 4, 3, dtype=torch.float64) + 0.5,
                        particles=True)
    with pytest.raises(ValueError, match="n_atoms"):
        GaussianMixture(weights, torch.zeros(1, 4, 2, dtype=torch.float64), torch.ones(1, 4, 2, dtype=torch.float64),
                        particles=True)
    particles, _, _ = _pair()
    interpolant = StochasticInterpolant()
    interpolant_model = MixtureMarginalEnergy(particles, interpolant, torch.tensor([0.2, 0.8]), end=particles)
    for refused in (particles.standardised,
                    lambda: interpolant_marginal(particles, particles, interpolant, 0.5),
                    lambda: interpolant_model.log_prob_unnormalised(torch.full((2,), 0.5), particles.sample(2))):
        with pytest.raises(ValueError, match="flat mixtures only"):
            refused()
