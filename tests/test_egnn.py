"""EGNN: E(3)-invariance of the energy it backs, equivariance of its output, zero initialisation,
double backward and bitwise determinism on CPU."""
import math

import pytest
import torch
from torch import nn

from boltzclf.diffusion import EDM, karras_grid
from boltzclf.models import EGNN, EnergyModel

H, C, N, O = 0, 1, 2, 3
#: Alanine dipeptide (ACE-ALA-NME) in the usual 22-atom order.
ALDP_TYPES = [H, C, H, H, C, O, N, H, C, H, C, H, H, H, C, O, N, H, C, H, H, H]
ALDP_BONDS = [(0, 1), (1, 2), (1, 3), (1, 4), (4, 5), (4, 6), (6, 7), (6, 8), (8, 9), (8, 10), (10, 11),
              (10, 12), (10, 13), (8, 14), (14, 15), (14, 16), (16, 17), (16, 18), (18, 19), (18, 20), (18, 21)]
N_ATOMS = len(ALDP_TYPES)
SIGMA_DATA = 0.15
TIMES = (2e-3, 0.03, 0.3, 2.0)


def _randomise_(network: EGNN, seed: int = 0) -> EGNN:
    """Give the zero-initialised last layers of φ_x random values, so the network is not trivially zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in network.layers:
            last = layer.coord[-1]
            last.weight.copy_(0.5 * torch.randn(last.weight.shape, generator=generator))
            last.bias.copy_(0.2 * torch.randn(last.bias.shape, generator=generator))
    return network


def _network(seed: int = 0, hidden: int = 16, n_layers: int = 3, randomise: bool = True) -> EGNN:
    torch.manual_seed(seed)
    network = EGNN(ALDP_TYPES, ALDP_BONDS, hidden=hidden, n_layers=n_layers, time_dim=16)
    return _randomise_(network, seed) if randomise else network


def _model(network: nn.Module, dtype=torch.float64) -> EnergyModel:
    return EnergyModel(network, process=EDM(), levels=karras_grid(2e-3, 2.0, 16), sigma_data=SIGMA_DATA,
                       event_shape=(N_ATOMS, 3), particles=True).to(dtype)


def _orthogonal(generator: torch.Generator, proper: bool) -> torch.Tensor:
    """A random 3×3 rotation (det +1) or reflection (det −1), float64."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.linalg.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return q


def _molecules(batch: int, generator: torch.Generator, t: float = 0.0) -> torch.Tensor:
    """Molecule-sized random configurations (spread ~σ_d) plus EDM noise of level t, ``(B, n, 3)``."""
    x = SIGMA_DATA * torch.randn(batch, N_ATOMS, 3, generator=generator, dtype=torch.float64)
    return x + t * torch.randn(x.shape, generator=generator, dtype=torch.float64)


def _invariance_errors(model: EnergyModel, seed: int = 0) -> tuple[float, float]:
    """Largest relative changes of U and of the score under random E(3) maps x ↦ x Rᵀ + b.

    Rotations and reflections, at several times; returns (energy error, score error).
    """
    generator = torch.Generator().manual_seed(seed)
    energy_error = score_error = 0.0
    for t in TIMES:
        x = _molecules(4, generator, t)
        times = torch.full((4,), t, dtype=torch.float64)
        energy, score = model.energy(times, x), model.score(times, x)
        for proper in (True, True, False):
            rot = _orthogonal(generator, proper)
            shift = torch.randn(1, 1, 3, generator=generator, dtype=torch.float64)
            moved = x @ rot.T + shift
            energy_moved, score_moved = model.energy(times, moved), model.score(times, moved)
            energy_error = max(energy_error, ((energy_moved - energy).abs() / energy.abs()).max().item())
            score_error = max(score_error, ((score_moved - score @ rot.T).abs().max() / score.abs().max()).item())
    return energy_error, score_error


def test_energy_is_e3_invariant_and_score_equivariant():
    model = _model(_network())
    energy_error, score_error = _invariance_errors(model)
    assert energy_error < 1e-10
    assert score_error < 1e-10


def test_correction_is_nontrivial():
    """The randomised network changes U well beyond rounding, so the invariance test is meaningful."""
    generator = torch.Generator().manual_seed(3)
    base, model = _model(_network(randomise=False)), _model(_network())
    for t in TIMES:
        x = _molecules(4, generator, t)
        times = torch.full((4,), t, dtype=torch.float64)
        with torch.no_grad():
            diff = (model.energy(times, x) - base.energy(times, x)).abs()
        assert diff.min() > 1e-6  # rounding in U (|U| ~ 100) is ~1e-13
        assert diff.max() > 1e-2


def test_network_output_is_equivariant_and_translation_invariant():
    network = _network().double()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(5, N_ATOMS, 3, generator=generator, dtype=torch.float64)
    c = torch.randn(5, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        out = network(c, x)
        assert out.abs().max() > 1e-2
        for proper in (True, False):
            rot = _orthogonal(generator, proper)
            shift = 3.0 * torch.randn(5, 1, 3, generator=generator, dtype=torch.float64)
            moved = network(c, x @ rot.T + shift)
            assert torch.allclose(moved, out @ rot.T, rtol=0, atol=1e-12 * out.abs().max().item())


def test_fresh_network_is_zero_and_model_is_gaussian_base():
    network = _network(randomise=False).double()
    model = _model(network)
    generator = torch.Generator().manual_seed(2)
    for t in TIMES:
        x = _molecules(6, generator, t)
        times = torch.full((6,), t, dtype=torch.float64)
        c = torch.full((6,), 0.1 * t, dtype=torch.float64)
        assert torch.equal(network(c, x), torch.zeros_like(x))
        var = model.process.input_variance(times, SIGMA_DATA)
        centred = x - x.mean(dim=1, keepdim=True)
        d = 3 * (N_ATOMS - 1)
        expected = -centred.pow(2).sum((1, 2)) / (2 * var) - 0.5 * d * torch.log(2 * math.pi * var)
        assert torch.allclose(model.log_prob_unnormalised(times, x), expected, rtol=1e-13, atol=0)


class _ShiftedOutput(nn.Module):
    """EGNN plus a fixed vector field over the atoms: not rotation-equivariant.

    (One vector shared by all atoms would not do: ⟨1 vᵀ, x̃⟩ = v · Σᵢ x̃ᵢ = 0 for centred x̃, so the
    energy cannot see it.)
    """

    def __init__(self, network: EGNN):
        super().__init__()
        self.network = network
        self.register_buffer("shift", 0.3 * torch.randn(N_ATOMS, 3, generator=torch.Generator().manual_seed(8)))

    def forward(self, c, x):
        return self.network(c, x) + self.shift.to(x.dtype)


class _RawCoordinateFeatures(EGNN):
    """EGNN whose node features also see the raw coordinates: not rotation-equivariant."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.leak = nn.Linear(3, self.atom_embedding.embedding_dim)

    def forward(self, c, x):
        self._x = x  # seen by initial_features; the rest is EGNN.forward itself
        return super().forward(c, x)

    def initial_features(self, c, dtype):
        return super().initial_features(c, dtype) + self.leak(self._x)


@pytest.mark.parametrize("broken", ["shifted_output", "raw_coordinates"])
def test_invariance_check_detects_broken_equivariance(broken):
    if broken == "shifted_output":
        network = _ShiftedOutput(_network())
    else:
        torch.manual_seed(0)
        network = _randomise_(_RawCoordinateFeatures(ALDP_TYPES, ALDP_BONDS, hidden=16, n_layers=3, time_dim=16))
    energy_error, score_error = _invariance_errors(_model(network))
    assert energy_error > 1e-6
    assert score_error > 1e-4


def _dsm_loss(model: EnergyModel, batch: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """EDM-weighted denoising score matching through the score's graph (double backward)."""
    generator = torch.Generator().manual_seed(seed)
    x0 = _molecules(batch, generator).to(dtype)
    levels = torch.randint(0, model.n_levels, (batch,), generator=generator)
    t = model.levels[levels].to(dtype)
    noise = model.centre(torch.randn(x0.shape, generator=generator, dtype=dtype))
    x_t = x0 + t[:, None, None] * noise
    _, score = model.log_prob_and_score(t, x_t, create_graph=True)
    residual = model.centre(noise + t[:, None, None] * score)
    weight = (t**2 + SIGMA_DATA**2) / SIGMA_DATA**2
    return (weight * residual.pow(2).sum((1, 2))).mean() / model.dim


def test_double_backward_gives_finite_nonzero_parameter_gradients():
    model = _model(_network())
    loss = _dsm_loss(model, 8, seed=4)
    loss.backward()
    assert torch.isfinite(loss)
    for name, param in model.network.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().max() > 0, name


def test_second_derivatives_match_finite_differences():
    """gradgradcheck on a tiny molecule: the Hessian-vector products autograd builds are correct."""
    torch.manual_seed(5)
    network = _randomise_(EGNN([H, C, O, N, H], [(0, 1), (1, 2), (1, 3), (3, 4)], hidden=4, n_layers=2,
                               time_dim=4), seed=5).double()
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 5, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda c, x: network(c, x), (c, x))


def _gradients(seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    model = _model(_randomise_(EGNN(ALDP_TYPES, ALDP_BONDS, hidden=16, n_layers=2, time_dim=16), seed),
                   dtype=torch.float32)
    _dsm_loss(model, 16, seed=seed, dtype=torch.float32).backward()  # edge tensors > OpenMP grain size
    return [p.grad.clone() for p in model.network.parameters()]


def test_gradients_are_bitwise_deterministic_on_cpu():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        first, second = _gradients(7), _gradients(7)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_float32_matches_float64():
    generator = torch.Generator().manual_seed(6)
    x = _molecules(3, generator, 0.1)
    c = torch.tensor([-0.3, 0.0, 0.2], dtype=torch.float64)
    network = _network()
    out32 = network(c.float(), x.float())
    out64 = network.double()(c, x)
    assert torch.allclose(out32.double(), out64, rtol=1e-4, atol=1e-5 * out64.abs().max().item())


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="bond indices"):
        EGNN([H, C], [(0, 2)])
    with pytest.raises(ValueError, match="different atoms"):
        EGNN([H, C], [(1, 1)])
    with pytest.raises(ValueError, match="non-negative"):
        EGNN([H, -1], [])
    with pytest.raises(ValueError, match="shape"):
        _network()(torch.zeros(2), torch.zeros(2, N_ATOMS + 1, 3))
