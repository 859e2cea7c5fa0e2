"""Ancestral reverse-diffusion sampling with exact scores recovers the target (weights and moments)."""
import math


from boltzclf.diffusion import VariancePreserving, log_snr_grid
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.sampling.ancestral import ancestral_sample
from boltzclf.targets.gmm import two_modes


def test_ancestral_sampling_with_exact_scores_recovers_mode_weights(generator):
    target = two_modes(2)
    model = MixtureMarginalEnergy(target, VariancePreserving(), log_snr_grid(VariancePreserving(), 1e-3, 0.999, 200))
    n = 4000
    result = ancestral_sample(model, n, generator)
    assert result.samples.shape == (n, 2) and result.n_score_evaluations == n * 200
    heavy = float((target.responsibilities(result.samples.double()).argmax(1) == 0).double().mean())
    assert abs(heavy - 2 / 3) < 4 * math.sqrt(2 / 9 / n)
    mean, var = target.moments()
    assert ((result.samples.double().mean(0) - mean).abs() < 4 * (var / n).sqrt()).all()
