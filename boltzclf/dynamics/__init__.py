"""Batched molecular dynamics on the torch force field: many walkers and temperatures in one tensor.

* :mod:`~boltzclf.dynamics.config` — :class:`BatchedMDConfig` (walkers, replicas, time step, ...).
* :mod:`~boltzclf.dynamics.tempering` — temperature ladder and the batched replica-exchange move.
* :mod:`~boltzclf.dynamics.engine` — the resumable run loop (:func:`simulate_batched`).
* :mod:`~boltzclf.dynamics.output` — trajectory, energies and results files; :func:`load_frames`.

The integrator is the generic BAOAB of :mod:`boltzclf.sampling.langevin`, shared with Langevin
dynamics on learned energies.
"""
