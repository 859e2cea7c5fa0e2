"""Batched Langevin dynamics (BAOAB), generalised HMC and MALA on any :class:`EnergyTarget`.

All walkers live in one tensor ``x`` ``(B, *event)``; Python loops only over time steps; randomness
comes only from the passed ``torch.Generator``. Each integrator is a step function on an explicit
:class:`LangevinState`; :func:`run_langevin` is the loop that records frames and diagnostics.

Units (molecules): positions nm, velocities nm/ps, time ps, friction 1/ps, masses amu, kT in kJ/mol
(R·T with R = 0.00831446261815324 kJ/mol/K). The target's force is −∇ of the *reduced* energy u
(kT/nm), so the acceleration is force·kT/m [nm/ps²] (1 amu·nm²/ps² = 1 kJ/mol). With one
temperature the stationary distribution of positions is exp(−u) whatever T; T and the masses set the
time scale and the kinetic energies. With per-walker thermostats (``Dynamics.bath``, BAOAB only) the
kick still uses the target's kT and the noise the walker's kT_b, so walker b samples exp(−U/kT_b). Toy targets use ``masses=None`` (1) and ``temperature=None`` (kT = 1).

* BAOAB (Leimkuhler & Matthews 2013): B half kick, A half drift, O exact Ornstein–Uhlenbeck
  v ← a v + √((1 − a²) kT/m) ξ with a = exp(−γ dt), A half drift, B half kick. One force evaluation
  per step; not Metropolised (O(dt²) configurational bias, exact for harmonic potentials).
* GHMC: O with a full dt, then a velocity-Verlet (BAB) proposal accepted with probability
  min(1, exp(−ΔH)), H = u + ½ Σ m v²/kT; on rejection positions are kept and the velocities flipped.
  Exact for any dt.
* MALA: :func:`~boltzclf.sampling.mcmc.mala_step` with step size h (no velocities, masses unused).

``remove_com=True`` (particle systems ``(n_atoms, 3)``, translation-invariant energies only) removes the
centre-of-mass velocity from the initial velocities and after every O step, so the centre of mass stays
fixed and the kinetic energy has 3(n_atoms − 1) degrees of freedom (``n_dof``). For MALA it centres the
noise (centre of geometry). Do not use it with external fields (e.g. a harmonic trap), whose
forces change the total momentum.

Non-finite values are never dropped silently. BAOAB: a walker whose energy or force becomes non-finite
is stopped where it failed (positions and the non-finite energy stay in the record) and flagged.
GHMC and MALA: non-finite proposals are rejected and counted; the walker carries on.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import torch
from tqdm.auto import tqdm

from boltzclf.energy.units import MOLAR_GAS_CONSTANT, kt_kj_per_mol
from boltzclf.sampling.mcmc import adapt_step_size, evaluate_active, mala_step, target_log_density

log = logging.getLogger(__name__)

INTEGRATORS = ("baoab", "ghmc", "mala")


@dataclass(frozen=True)
class Dynamics:
    """Integrator parameters. ``masses`` broadcasts against ``x`` ``(B, *event)`` (amu, or 1 for toys).

    ``kT`` (kJ/mol, or 1 for toys) is the unit of the target's reduced energy u = U/kT, so the
    physical force is kT·(−∇u). ``bath`` (None, or a ``(B,)`` float64 tensor of kJ/mol) gives every
    walker its own thermostat temperature (temperature replica exchange, BAOAB only): walker b then
    samples exp(−U/kT_b) = exp(−u·kT/kT_b), and its kinetic energy is reported in units of kT_b.
    """

    dt: float
    friction: float
    kT: float
    masses: torch.Tensor
    remove_com: bool = False
    bath: torch.Tensor | None = None
    _factors: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def thermal(self, x: torch.Tensor) -> float | torch.Tensor:
        """The thermostat's kT [kJ/mol], broadcastable against ``x`` ``(B, *event)``."""
        if self.bath is None:
            return self.kT
        return self.bath.to(x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))

    def factors(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(kT/m, √(kT_bath/m))`` broadcastable against ``x``, in its dtype and device (cached):
        the kick's force-to-acceleration factor and the thermal velocity scale."""
        key = (x.dtype, x.device, x.dim())
        if key not in self._factors:
            masses = self.masses.to(dtype=x.dtype, device=x.device)
            self._factors[key] = (self.kT / masses, torch.sqrt(self.thermal(x) / masses))
        return self._factors[key]


@dataclass
class LangevinState:
    """Walkers: positions ``x`` ``(B, *event)``, velocities ``v`` (like x, None for MALA), reduced
    energies ``energy`` ``(B,)`` [kT], forces ``force`` (like x) [kT/nm] and ``active`` ``(B,)`` (False
    once a BAOAB walker hit a non-finite energy or force)."""

    x: torch.Tensor
    v: torch.Tensor | None
    energy: torch.Tensor
    force: torch.Tensor
    active: torch.Tensor


@dataclass
class LangevinResult:
    """Frames and diagnostics of :func:`run_langevin` (production phase only, unless stated).

    Attributes
    ----------
    samples : (n_frames, B, *event) positions.
    energies : (n_frames, B) reduced energies [kT], float64.
    kinetic : (n_frames, B) kinetic energies ½Σmv²/kT [kT], float64 (see :class:`StepInfo` for which
        velocities); None for MALA.
    acceptance_rate : mean acceptance over walkers and production steps; None for BAOAB.
    acceptance_per_walker : (B,) production acceptance rate; None for BAOAB.
    n_force_evaluations : batched energy+force calls, warm-up and initial evaluation included.
    n_nonfinite : number of walker-evaluations with a non-finite energy, force or position (all steps).
    nonfinite_walkers : (B,) bool, walkers that met a non-finite value at least once.
    n_dof : kinetic degrees of freedom per walker (3N − 3 with ``remove_com``).
    step_size : MALA step size after warm-up (float or (B,)); None otherwise.
    final_state : the state after the last step (to continue the chain).
    """

    samples: torch.Tensor
    energies: torch.Tensor
    kinetic: torch.Tensor | None
    acceptance_rate: float | None
    acceptance_per_walker: torch.Tensor | None
    n_force_evaluations: int
    n_nonfinite: int
    nonfinite_walkers: torch.Tensor
    n_dof: int
    step_size: torch.Tensor | float | None
    final_state: LangevinState


def make_dynamics(x: torch.Tensor, dt: float, friction: float, temperature: float | None = None,
                  masses=None, remove_com: bool = False,
                  bath_temperatures: torch.Tensor | None = None) -> Dynamics:
    """Parameters for walkers shaped like ``x`` ``(B, *event)``.

    ``masses``: None (1), a scalar, per-particle ``(n_atoms,)`` for ``(n_atoms, 3)`` events, or the
    event shape; amu. ``temperature``: K (the temperature of the target's reduced energy), or None
    for kT = 1. ``bath_temperatures``: optional ``(B,)`` thermostat temperatures in K (needs
    ``temperature``), see :class:`Dynamics`.
    """
    event = tuple(x.shape[1:])
    if dt <= 0 or friction < 0:
        raise ValueError(f"need dt > 0 and friction >= 0, got dt={dt}, friction={friction}")
    if remove_com and (len(event) != 2 or event[1] != 3):
        raise ValueError(f"remove_com needs particles (n_atoms, 3), got event shape {event}")
    m = torch.as_tensor(1.0 if masses is None else masses, dtype=x.dtype, device=x.device)
    if m.dim() and len(event) == 2 and tuple(m.shape) == event[:1]:
        m = m[:, None]
    elif m.dim() and tuple(m.shape) != event:
        raise ValueError(f"masses of shape {tuple(m.shape)} do not fit event shape {event}")
    if bool((m <= 0).any()):
        raise ValueError("masses must be positive")
    if remove_com and m.dim() == 0:
        m = m.expand(event[0], 1)
    kT = 1.0 if temperature is None else kt_kj_per_mol(temperature)
    bath = None
    if bath_temperatures is not None:
        bath = torch.as_tensor(bath_temperatures, dtype=torch.float64, device=x.device)
        if temperature is None or bath.shape != x.shape[:1] or bool((bath <= 0).any()):
            raise ValueError(f"bath_temperatures must be positive K with shape ({x.shape[0]},), "
                             "together with the target's temperature")
        bath = MOLAR_GAS_CONSTANT * bath
    return Dynamics(float(dt), float(friction), kT, m, remove_com, bath)


def n_degrees_of_freedom(x: torch.Tensor, dynamics: Dynamics) -> int:
    """Kinetic degrees of freedom per walker."""
    return math.prod(x.shape[1:]) - (3 if dynamics.remove_com else 0)


def remove_com_velocity(v: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """``v`` ``(B, n_atoms, 3)`` minus its centre-of-mass velocity (``masses`` ``(n_atoms, 1)``)."""
    m = masses.expand(v.shape[-2], 1)
    return v - (m * v).sum(-2, keepdim=True) / m.sum()


def maxwell_boltzmann(x: torch.Tensor, dynamics: Dynamics, generator: torch.Generator) -> torch.Tensor:
    """Velocities like ``x`` drawn from N(0, kT/m) (centre-of-mass motion removed if requested)."""
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    v = v * dynamics.factors(x)[1]
    return remove_com_velocity(v, dynamics.masses) if dynamics.remove_com else v


def kinetic_energy(v: torch.Tensor, dynamics: Dynamics) -> torch.Tensor:
    """½ Σ m v² / kT per walker, ``(B,)`` float64 [kT of the walker's thermostat]."""
    kT = dynamics.kT if dynamics.bath is None else dynamics.bath.to(torch.float64)
    return 0.5 * (dynamics.masses * v * v).flatten(1).sum(1).to(torch.float64) / kT


def init_state(target, x0: torch.Tensor, dynamics: Dynamics | None, generator: torch.Generator) -> LangevinState:
    """Evaluate ``x0`` and draw Maxwell–Boltzmann velocities (none when ``dynamics`` is None).

    Raises
    ------
    ValueError
        If any starting energy or force is not finite (naming the walkers).
    """
    energy, force = evaluate_active(target, x0)
    bad = ~(torch.isfinite(energy) & torch.isfinite(force).flatten(1).all(1))
    if bool(bad.any()):
        raise ValueError(f"non-finite starting energy or force for walkers {bad.nonzero().flatten()[:10].tolist()}")
    v = maxwell_boltzmann(x0, dynamics, generator) if dynamics is not None else None
    return LangevinState(x0, v, energy, force, torch.ones(x0.shape[0], dtype=torch.bool, device=x0.device))


def _ou(v: torch.Tensor, dynamics: Dynamics, dt: float, generator: torch.Generator) -> torch.Tensor:
    a = math.exp(-dynamics.friction * dt)
    noise = torch.randn(v.shape, generator=generator, dtype=v.dtype, device=v.device)
    v = a * v + math.sqrt(1.0 - a * a) * dynamics.factors(v)[1] * noise
    return remove_com_velocity(v, dynamics.masses) if dynamics.remove_com else v


def _kick(v: torch.Tensor, force: torch.Tensor, dynamics: Dynamics, dt: float) -> torch.Tensor:
    return v + (dt * force) * dynamics.factors(v)[0]


def finite_rows(t: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: whether every entry of ``t[b]`` is finite (one reduction: a NaN or ±inf entry
    makes the row's sum non-finite)."""
    return torch.isfinite(t.flatten(1).sum(1))


@dataclass
class StepInfo:
    """Diagnostics of one BAOAB or GHMC step.

    Attributes
    ----------
    nonfinite : (B,) bool. BAOAB: walkers stopped in this step; GHMC: proposals rejected as non-finite.
    velocities : the velocities whose kinetic energy :attr:`kinetic` reports. BAOAB: right after the
        O step, which are exactly Maxwell–Boltzmann for harmonic forces (the end-of-step velocities are
        O(dt²) too cold: about 2 % for alanine dipeptide at 1 fs); GHMC: the end-of-step velocities.
    dynamics : the integrator parameters (masses, thermostat kT).
    accepted : (B,) bool (GHMC) or None (BAOAB).
    """

    nonfinite: torch.Tensor
    velocities: torch.Tensor
    dynamics: Dynamics
    accepted: torch.Tensor | None = None

    @property
    def kinetic(self) -> torch.Tensor:
        """(B,) float64 kinetic energy ½Σmv²/kT [kT] of :attr:`velocities` (computed on demand)."""
        return kinetic_energy(self.velocities, self.dynamics)


def baoab_step(target, state: LangevinState, dynamics: Dynamics, generator: torch.Generator
               ) -> tuple[LangevinState, StepInfo]:
    """One BAOAB step (one force evaluation of the active walkers)."""
    h = 0.5 * dynamics.dt
    v = _kick(state.v, state.force, dynamics, h)
    x = state.x + h * v
    v_thermal = _ou(v, dynamics, dynamics.dt, generator)
    x = x + h * v_thermal
    energy, force = evaluate_active(target, x, state.active)
    v = _kick(v_thermal, force, dynamics, h)
    ok = torch.isfinite(energy) & finite_rows(force) & finite_rows(v)
    failed = state.active & ~ok
    if bool(ok.all()) and bool(state.active.all()):  # the common case: no masking needed
        return LangevinState(x, v, energy.to(state.energy.dtype), force, state.active), \
            StepInfo(failed, v_thermal, dynamics)
    keep = state.active.reshape((-1,) + (1,) * (x.dim() - 1))
    new = LangevinState(torch.where(keep, x, state.x), torch.where(keep, v, state.v),
                        torch.where(state.active, energy.to(state.energy.dtype), state.energy),
                        torch.where(keep, force, state.force), state.active & ok)
    return new, StepInfo(failed, v_thermal, dynamics)


def ghmc_step(target, state: LangevinState, dynamics: Dynamics, generator: torch.Generator
              ) -> tuple[LangevinState, StepInfo]:
    """One GHMC step: O, then a velocity-Verlet proposal accepted by the total-energy Metropolis rule
    (velocities flipped on rejection). One force evaluation."""
    if dynamics.bath is not None:
        raise ValueError("GHMC with per-walker thermostat temperatures is not implemented; use BAOAB")
    h = 0.5 * dynamics.dt
    v0 = _ou(state.v, dynamics, dynamics.dt, generator)
    v = _kick(v0, state.force, dynamics, h)
    x = state.x + dynamics.dt * v
    energy, force = evaluate_active(target, x)
    v = _kick(v, force, dynamics, h)
    delta = (energy.to(torch.float64) + kinetic_energy(v, dynamics)
             - state.energy.to(torch.float64) - kinetic_energy(v0, dynamics))
    nonfinite = ~(torch.isfinite(delta) & finite_rows(force))
    log_ratio = torch.where(nonfinite, torch.full_like(delta, -math.inf), -delta)
    uniform = torch.rand(x.shape[0], generator=generator, dtype=torch.float64, device=x.device)
    accepted = torch.log(uniform) < log_ratio
    keep = accepted.reshape((-1,) + (1,) * (x.dim() - 1))
    new = LangevinState(torch.where(keep, x, state.x), torch.where(keep, v, -v0),
                        torch.where(accepted, energy.to(state.energy.dtype), state.energy),
                        torch.where(keep, force, state.force), state.active)
    return new, StepInfo(nonfinite, new.v, dynamics, accepted)


def _centre(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(dim=-2, keepdim=True)


@torch.no_grad()
def run_langevin(target, x0: torch.Tensor, n_steps: int, integrator: str = "baoab", *,
                 generator: torch.Generator, dt: float = 1e-3, friction: float = 1.0,
                 temperature: float | None = None, masses=None, remove_com: bool = False,
                 step_size: torch.Tensor | float | None = None, warmup: int = 0, adapt: bool = False,
                 target_acceptance: float = 0.574, record_every: int = 1,
                 progress: bool = False) -> LangevinResult:
    """Run ``warmup`` unrecorded steps, then ``n_steps`` production steps recording every ``record_every``.

    Parameters
    ----------
    target
        An EnergyTarget (reduced energy ``(B,)`` [kT], force like ``x``).
    x0
        Starting positions ``(B, *event)`` (nm for molecules); every walker must have a finite energy.
    integrator
        ``"baoab"``, ``"ghmc"`` or ``"mala"``.
    generator
        The only source of randomness.
    dt, friction, temperature, masses, remove_com
        Dynamics (ps, 1/ps, K or None for kT = 1, amu or None for 1); see :func:`make_dynamics`.
    step_size
        MALA step size h (float or ``(B,)``); default dt²/2 (the one-leapfrog HMC equivalent at unit mass).
    warmup, adapt, target_acceptance
        With ``adapt`` (MALA only) the per-walker step size is tuned towards ``target_acceptance``
        during the warm-up steps and then frozen, so the production chain is a valid MCMC.

    Returns
    -------
    LangevinResult
    """
    if integrator not in INTEGRATORS:
        raise ValueError(f"integrator: {integrator!r} is not one of {INTEGRATORS}")
    if n_steps < 1 or warmup < 0 or record_every < 1:
        raise ValueError("need n_steps >= 1, warmup >= 0 and record_every >= 1")
    if adapt and integrator != "mala":
        raise ValueError("step-size adaptation is implemented for MALA only")
    dynamics = make_dynamics(x0, dt, friction, temperature, masses, remove_com)
    state = init_state(target, x0, None if integrator == "mala" else dynamics, generator)
    n_evals = 1
    batch = x0.shape[0]
    if integrator == "mala":
        log_density = target_log_density(target)
        project = _centre if remove_com else None
        h = 0.5 * dt * dt if step_size is None else step_size
        if adapt:
            h = torch.as_tensor(h, dtype=x0.dtype, device=x0.device).expand(batch).clone()
    n_frames = n_steps // record_every
    samples = x0.new_empty((n_frames,) + tuple(x0.shape))
    energies = torch.empty(n_frames, batch, dtype=torch.float64, device=x0.device)
    kinetic = None if integrator == "mala" else torch.empty_like(energies)
    accepted_count = torch.zeros(batch, dtype=torch.float64, device=x0.device)
    nonfinite_walkers = torch.zeros(batch, dtype=torch.bool, device=x0.device)
    n_nonfinite = 0
    for step in tqdm(range(warmup + n_steps), disable=not progress, unit="step", desc=integrator):
        if integrator != "mala":
            state, info = (baoab_step if integrator == "baoab" else ghmc_step)(target, state, dynamics, generator)
            accepted, bad = info.accepted, info.nonfinite
        else:
            res = mala_step(log_density, state.x, -state.energy, state.force, h, generator, project)
            state = replace(state, x=res.x, energy=-res.logp, force=res.grad)
            accepted, bad = res.accepted, res.nonfinite
            if adapt and step < warmup:
                h = adapt_step_size(h, accepted, target_acceptance)
        n_evals += 1
        if bool(bad.any()):
            n_nonfinite += int(bad.sum())
            nonfinite_walkers |= bad
            log.warning("step %d: %d walkers met non-finite energies or forces (%s)", step, int(bad.sum()),
                        "stopped" if integrator == "baoab" else "proposals rejected")
        production = step - warmup
        if production < 0:
            continue
        if integrator != "baoab":
            accepted_count += accepted.to(torch.float64)
        if (production + 1) % record_every == 0:
            frame = production // record_every
            samples[frame] = state.x
            energies[frame] = state.energy.to(torch.float64)
            if kinetic is not None:
                kinetic[frame] = info.kinetic
    per_walker = None if integrator == "baoab" else accepted_count / n_steps
    return LangevinResult(
        samples=samples, energies=energies, kinetic=kinetic,
        acceptance_rate=None if per_walker is None else float(per_walker.mean()),
        acceptance_per_walker=per_walker, n_force_evaluations=n_evals, n_nonfinite=n_nonfinite,
        nonfinite_walkers=nonfinite_walkers, n_dof=n_degrees_of_freedom(x0, dynamics),
        step_size=h if integrator == "mala" else None, final_state=state)
