"""The end densities as extra classes (losses.endpoints): with the exact interpolant marginals of two
Gaussian mixtures and unnormalised ends π̃_i = e^{c_i} p_i, the profiled end-class normalisers are
g_i = c_i (the log-partition functions), so g_0 − g_1 = ln Z_0 − ln Z_1."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from boltzclf.diffusion import StochasticInterpolant, uniform_grid
from boltzclf.losses import LossConfig, build_loss
from boltzclf.losses.endpoints import EndpointClassification, profiled_offset
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.targets.gmm import two_modes

C0, C1 = 2.5, -1.0


class ExactWithEndClasses(MixtureMarginalEnergy):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.end_free_energies = nn.Parameter(torch.zeros(2))


def _setup():
    start, end = two_modes(2), two_modes(2, separation=3.0, variance=0.2, heavy_weight=0.3)
    model = ExactWithEndClasses(start, StochasticInterpolant(0.5), uniform_grid(0.01, 0.99, 16), end=end)
    energies = (lambda x: -(start.log_prob(x) + C0), lambda x: -(end.log_prob(x) + C1))
    return start, end, model, energies


def test_the_profiled_end_class_normalisers_are_the_log_partition_functions():
    start, end, model, energies = _setup()
    loss = EndpointClassification(lambda m, b, g: {"loss": torch.zeros(b[0].shape[0])}, *energies)
    gen = torch.Generator().manual_seed(0)
    batch = (start.sample(20000, gen), end.sample(20000, gen))
    loss(model, batch, torch.Generator().manual_seed(1))
    g = model.end_free_energies.detach()
    # the first/last levels (t = 0.01, 0.99) are close to, not equal to, the ends: a small, known offset
    assert float(g[0]) == pytest.approx(C0, abs=0.05) and float(g[1]) == pytest.approx(C1, abs=0.05)
    assert float(g[0] - g[1]) == pytest.approx(C0 - C1, abs=0.07)


def test_profiled_offset_minimises_the_binary_loss():
    a, b = torch.randn(500, dtype=torch.float64) + 3.0, torch.randn(700, dtype=torch.float64) * 2 - 1.0
    g = profiled_offset(a, b, start=400.0)

    def objective(c):
        return float(0.5 * F.softplus(a + c).mean() + 0.5 * F.softplus(-b - c).mean())
    assert objective(g) < min(objective(g - 1e-3), objective(g + 1e-3))


def test_build_loss_wraps_and_refuses_without_energies():
    _, _, _, energies = _setup()
    config = LossConfig(kind="diffclf", pairs="adjacent", dsm_weighting="uniform", endpoints=0.5)
    loss = build_loss(config, energies)
    assert isinstance(loss, EndpointClassification) and loss.weight == 0.5
    with pytest.raises(Exception, match="loss.endpoints"):
        build_loss(config)
    assert not isinstance(build_loss(LossConfig(kind="dsm")), EndpointClassification)
