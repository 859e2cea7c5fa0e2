"""SMC on an exact, mis-weighted Gaussian-mixture path with its groups spread over the ranks (run by
``torchrun``, or plainly for one process); rank 0 writes log Ẑ and the heavy-mode fraction as JSON."""
import json
import sys

import torch

from boltzclf.core import distributed
from boltzclf.diffusion import VariancePreserving, log_snr_grid
from boltzclf.estimators.weighted import weighted_fractions
from boltzclf.models.analytic import MixtureMarginalEnergy
from boltzclf.sampling.distributed_smc import distributed_smc, weighted_sum
from boltzclf.sampling.kernels import DiffusionKernels
from boltzclf.sampling.paths import LearnedPath
from boltzclf.sampling.smc import SMCSettings
from boltzclf.targets.gmm import GaussianMixture, two_modes


def main(out: str, seed: int) -> None:
    distributed.init_from_environment(torch.device("cpu"))
    torch.set_num_threads(1)
    vp, target = VariancePreserving(), two_modes(3)
    misweighted = GaussianMixture(torch.tensor([0.5, 0.5], dtype=torch.float64), target.means, target.variances)
    times = log_snr_grid(vp, 1e-3, 0.9999, 48)
    model = MixtureMarginalEnergy(misweighted, vp, times)
    path = LearnedPath(model, final_target=target, times=times)
    kernels = DiffusionKernels(vp, path.times, model, 1.0, "ddpm", "hessian")
    result = distributed_smc(path, kernels, SMCSettings(n_particles=4096, n_groups=16), seed, torch.float64)
    labels = target.responsibilities(result.samples).argmax(1)
    heavy = float(weighted_sum((labels == 0).double(), result.log_weights))
    local_se = float(weighted_fractions(labels, 2, result.log_weights - torch.logsumexp(result.log_weights, 0),
                                        result.ancestors).se[0])
    record = {"world_size": distributed.world_size(), "log_z": result.log_z, "log_z_se": result.log_z_se,
              "n_groups": len(result.log_z_groups), "heavy": heavy,
              "heavy_se": local_se / distributed.world_size() ** 0.5,
              "weight_total": float(weighted_sum(torch.ones(len(labels)), result.log_weights)),
              "n_target_evals": result.n_target_evals}
    if distributed.is_main():
        with open(out, "w") as handle:
            json.dump(record, handle)
    distributed.close()  # leave the group together: a rank exiting mid-teardown aborts gloo's threads


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
