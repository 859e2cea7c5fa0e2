"""The neutral energy layer both energy backends build on; it imports neither of them.

:mod:`~boltzclf.energy.units` (kT), :mod:`~boltzclf.energy.policy` (non-finite and huge energies),
:mod:`~boltzclf.energy.bridge` (the bridge protocol, the autograd glue and the registry of backends,
held as import strings so that nothing registers itself on import).
"""
