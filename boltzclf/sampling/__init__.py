"""Samplers over learned and true energies; randomness only from a passed torch.Generator.

``kernels`` (reverse/forward kernels with log-densities), ``paths`` (targets along the levels),
``priors`` (start distributions), ``smc`` (SMC and diffusion AIS), ``resampling``, ``ode``
(probability-flow ODE with likelihoods), ``mcmc`` and ``langevin`` (MALA, BAOAB, GHMC on any energy),
``replica`` (replica exchange over the levels), ``composition`` (products and mixtures of energies),
``ancestral`` (unweighted reverse diffusion).
"""
