"""The learned interpolant velocity: exact equivariance of the pairwise field, and the regression loss
against velocities known in closed form."""
import pytest
import torch

from boltzclf.diffusion import StochasticInterpolant, VariancePreserving
from boltzclf.losses.velocity import velocity_matching_loss
from boltzclf.models.velocity import PairwiseVelocity, VelocityModel

N_ATOMS, BONDS = 6, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]


def _rotation(seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def _model() -> VelocityModel:
    torch.manual_seed(0)
    network = PairwiseVelocity(N_ATOMS, BONDS, hidden=32, n_layers=2, time_dim=8).double()
    for parameter in network.parameters():  # leave the zero initialisation: a non-trivial field
        torch.nn.init.normal_(parameter, std=0.3)
    return VelocityModel(network, StochasticInterpolant(0.1), sigma_data=0.2)


def test_velocity_is_rotation_equivariant_translation_invariant_and_without_net_motion():
    model = _model()
    x = torch.randn(5, N_ATOMS, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.rand(5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rotation, shift = _rotation(3), torch.tensor([0.3, -1.2, 0.7], dtype=torch.float64)
    with torch.no_grad():
        v = model(t, x)
        rotated = model(t, x @ rotation.T + shift)
    assert float(v.abs().max()) > 1e-2  # not the trivial zero field
    torch.testing.assert_close(rotated, v @ rotation.T, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(v.sum(1), torch.zeros(5, 3, dtype=torch.float64), rtol=0, atol=1e-12)


def test_a_fresh_network_is_the_zero_field():
    network = PairwiseVelocity(N_ATOMS, BONDS, hidden=16, n_layers=1, time_dim=8)
    model = VelocityModel(network, StochasticInterpolant(0.1), sigma_data=0.2)
    assert torch.equal(model(torch.full((2,), 0.5), torch.randn(2, N_ATOMS, 3)), torch.zeros(2, N_ATOMS, 3))


def test_the_loss_vanishes_at_the_true_velocity_of_fixed_pairs_and_measures_any_other():
    """With x0 and x1 fixed, E[x1 − x0 | x_t] = x1 − x0 exactly: the loss is 0 there, and for the zero
    field it is ‖x1 − x0‖² / (d σ_d²); the reversed velocity x0 − x1 gives four times that."""
    generator = torch.Generator().manual_seed(4)
    x0 = torch.randn(1, N_ATOMS, 3, generator=generator, dtype=torch.float64).expand(64, -1, -1)
    x1 = torch.randn(1, N_ATOMS, 3, generator=generator, dtype=torch.float64).expand(64, -1, -1)
    x0, x1 = x0 - x0.mean(1, keepdim=True), x1 - x1.mean(1, keepdim=True)
    sigma = 0.2

    def field(value):
        class Fixed(torch.nn.Module):
            process, sigma_data = StochasticInterpolant(0.1), sigma

            def forward(self, t, x):
                return value[: x.shape[0]]
        return Fixed()

    def loss(model):
        return velocity_matching_loss(model, (x0, x1), torch.Generator().manual_seed(5), (1e-3, 0.999))["loss"]

    zero = float((x1 - x0).pow(2).mean() / sigma ** 2)
    assert torch.allclose(loss(field(x1 - x0)), torch.zeros(64, dtype=torch.float64))
    assert loss(field(torch.zeros_like(x0))) == pytest.approx(torch.full((64,), zero, dtype=torch.float64))
    assert loss(field(x0 - x1)) == pytest.approx(torch.full((64,), 4 * zero, dtype=torch.float64))


def test_a_velocity_needs_an_interpolant():
    with pytest.raises(ValueError, match="interpolant"):
        VelocityModel(PairwiseVelocity(N_ATOMS, BONDS, hidden=8, n_layers=1, time_dim=8), VariancePreserving(), 0.2)
