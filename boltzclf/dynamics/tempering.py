"""Batched temperature replica exchange: R temperatures × W walkers in one tensor.

Layout: walkers are stored slot-major, ``x`` ``(R·W, N, 3)``, where slot ``r·W + w`` always runs at
temperature T_r (a fixed thermostat) and column w is an independent replica-exchange system of R
chains. Exchanges move *configurations* (positions, velocities rescaled by √(T_new/T_old), cached
energies and forces) between slots (r, w) and (r+1, w), never temperatures, so the walkers at slot
r = 0 always hold the target temperature and can be written out like plain MD.

Exchange rule (Sugita & Okamoto 1999): for neighbouring slots i, j = i+1 with β = 1/kT and potential
energies U_i, U_j of the configurations they hold, the swap is accepted with probability
min(1, exp[(β_i − β_j)(U_i − U_j)]). Attempts alternate between the even pairs (0-1, 2-3, …) and the
odd pairs (1-2, 3-4, …), so each attempt is a set of disjoint, independent swaps. With velocities
rescaled the kinetic energies need not enter the rule (the rescaling maps the Maxwell–Boltzmann
distribution at T_old onto the one at T_new).

Every configuration carries a replica label; round trips (a label visiting the top slot, then the
bottom slot, and returning to the top) are counted as in :mod:`boltzclf.sampling.replica`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from boltzclf.energy.units import MOLAR_GAS_CONSTANT
from boltzclf.sampling.langevin import LangevinState
from boltzclf.sampling.replica import update_round_trips


def geometric_ladder(t_min: float, t_max: float, n: int) -> torch.Tensor:
    """``n`` temperatures (K, float64) from ``t_min`` to ``t_max`` with a constant ratio.

    A constant ratio gives roughly uniform exchange rates for a system with a constant heat
    capacity. ``n = 1`` gives ``[t_min]``.
    """
    if n < 1 or t_min <= 0 or (n > 1 and t_max <= t_min):
        raise ValueError(f"need n >= 1 and 0 < t_min < t_max, got n={n}, t_min={t_min}, t_max={t_max}")
    if n == 1:
        return torch.tensor([float(t_min)], dtype=torch.float64)
    return t_min * (t_max / t_min) ** (torch.arange(n, dtype=torch.float64) / (n - 1))


@dataclass
class ExchangeState:
    """Bookkeeping of the replica-exchange system.

    Attributes
    ----------
    labels : (R, W) long, the replica label held by each slot.
    trip_phase : (R, W) int8 per label (0: not yet at the top, 1: came from the top, 2: reached the
        bottom after the top).
    round_trips : (R, W) long, completed round trips per label.
    attempts, accepted : (R − 1,) float64, swap attempts and acceptances per neighbouring pair.
    n_attempts : exchange attempts made so far (their parity picks even or odd pairs).
    """

    labels: torch.Tensor
    trip_phase: torch.Tensor
    round_trips: torch.Tensor
    attempts: torch.Tensor
    accepted: torch.Tensor
    n_attempts: int = 0

    @classmethod
    def start(cls, n_replicas: int, n_walkers: int, device: torch.device | str = "cpu") -> "ExchangeState":
        """Label r at slot r for every column; the labels that start at the top count from there."""
        labels = torch.arange(n_replicas, device=device)[:, None].expand(n_replicas, n_walkers).clone()
        trip_phase = torch.zeros(n_replicas, n_walkers, dtype=torch.int8, device=device)
        trip_phase[n_replicas - 1] = 1
        round_trips = torch.zeros(n_replicas, n_walkers, dtype=torch.long, device=device)
        pairs = max(n_replicas - 1, 0)
        zeros = torch.zeros(pairs, dtype=torch.float64, device=device)
        return cls(labels, trip_phase, round_trips, zeros, zeros.clone())

    def as_dict(self) -> dict[str, torch.Tensor | int]:
        """Tensors for a checkpoint."""
        return {"labels": self.labels, "trip_phase": self.trip_phase, "round_trips": self.round_trips,
                "attempts": self.attempts, "accepted": self.accepted, "n_attempts": self.n_attempts}

    @classmethod
    def from_dict(cls, data: dict) -> "ExchangeState":
        return cls(data["labels"], data["trip_phase"], data["round_trips"], data["attempts"],
                   data["accepted"], int(data["n_attempts"]))

    @classmethod
    def merge(cls, parts: list["ExchangeState"]) -> "ExchangeState":
        """One state of the columns of ``parts`` (those of each process, in rank order): per-column
        tensors side by side, per-pair counts summed (every part attempts the same pairs)."""
        def columns(name: str) -> torch.Tensor:
            return torch.cat([getattr(part, name).cpu() for part in parts], dim=1)
        return cls(columns("labels"), columns("trip_phase"), columns("round_trips"),
                   sum(part.attempts.cpu() for part in parts), sum(part.accepted.cpu() for part in parts),
                   parts[0].n_attempts)

    def summary(self, temperatures: torch.Tensor) -> dict:
        """Exchange rates per pair and round trips, JSON-ready."""
        rate = (self.accepted / self.attempts.clamp(min=1)).tolist()
        return {"temperatures_K": temperatures.tolist(), "exchange_attempts": self.n_attempts,
                "acceptance_per_pair": rate, "round_trips": int(self.round_trips.sum()),
                "round_trips_per_column": float(self.round_trips.sum()) / self.labels.shape[1]}


def swap_acceptance(beta_lo: torch.Tensor, beta_hi: torch.Tensor, u_lo: torch.Tensor,
                    u_hi: torch.Tensor) -> torch.Tensor:
    """log of the Metropolis ratio for swapping the configurations of two slots.

    Parameters
    ----------
    beta_lo, beta_hi : 1/kT [mol/kJ] of the lower and upper slot of each pair, ``(n_pairs, 1)``.
    u_lo, u_hi : ``(n_pairs, W)`` potential energies [kJ/mol] of the configurations they hold, float64.

    Returns
    -------
    (n_pairs, W) float64 log α = (β_lo − β_hi)(U_lo − U_hi); −inf where an energy is not finite.
    """
    log_alpha = (beta_lo - beta_hi) * (u_lo - u_hi)
    return torch.where(torch.isfinite(log_alpha), log_alpha, torch.full_like(log_alpha, -math.inf))


def exchange(state: LangevinState, exchange_state: ExchangeState, temperatures: torch.Tensor,
             reference_temperature: float, generator: torch.Generator) -> LangevinState:
    """One exchange attempt over the even or the odd neighbouring pairs (alternating).

    Parameters
    ----------
    state
        Walkers in slot-major layout ``(R·W, N, 3)``; ``state.energy`` is the reduced energy at
        ``reference_temperature`` (the target's), ``state.force`` likewise.
    exchange_state
        Updated in place (labels, trip counts, per-pair statistics).
    temperatures
        ``(R,)`` slot temperatures [K].
    reference_temperature
        K, the temperature of the target's reduced energy.
    generator
        The source of the uniform numbers (one per column and pair attempted).

    Returns
    -------
    LangevinState
        The state with accepted configurations swapped (velocities rescaled). Energies and forces
        are in target units, so they move with their configurations unchanged. Walkers stopped by
        a non-finite value (``state.active`` false) never swap.
    """
    n_replicas, n_walkers = exchange_state.labels.shape
    parity = exchange_state.n_attempts % 2
    exchange_state.n_attempts += 1
    lows = torch.arange(parity, n_replicas - 1, 2, device=state.x.device)
    if len(lows) == 0:
        return state
    kT_ref = MOLAR_GAS_CONSTANT * reference_temperature
    beta = 1.0 / (MOLAR_GAS_CONSTANT * temperatures.to(device=state.x.device, dtype=torch.float64))
    potential = (state.energy.to(torch.float64) * kT_ref).reshape(n_replicas, n_walkers)
    log_alpha = swap_acceptance(beta[lows, None], beta[lows + 1, None], potential[lows], potential[lows + 1])
    active = state.active.reshape(n_replicas, n_walkers)
    log_alpha = torch.where(active[lows] & active[lows + 1], log_alpha, torch.full_like(log_alpha, -math.inf))
    uniform = torch.rand(log_alpha.shape, generator=generator, dtype=torch.float64, device=state.x.device)
    accept = torch.log(uniform) < log_alpha  # (n_pairs, W)
    exchange_state.attempts[lows] += n_walkers
    exchange_state.accepted[lows] += accept.sum(1).to(torch.float64)
    # permutation of slots: slot (lo, w) <-> (lo+1, w) where accepted
    source = torch.arange(n_replicas, device=state.x.device)[:, None].expand(n_replicas, n_walkers).clone()
    source[lows] = torch.where(accept, lows[:, None] + 1, lows[:, None])
    source[lows + 1] = torch.where(accept, lows[:, None], lows[:, None] + 1)
    flat = (source * n_walkers + torch.arange(n_walkers, device=state.x.device)).flatten()
    exchange_state.labels = torch.gather(exchange_state.labels, 0, source)
    update_round_trips(exchange_state.labels, exchange_state.trip_phase, exchange_state.round_trips)
    scale = torch.sqrt(temperatures.to(device=state.x.device, dtype=torch.float64)[:, None]
                       / temperatures.to(device=state.x.device, dtype=torch.float64)[source])
    scale = scale.flatten().to(state.x.dtype).reshape((-1,) + (1,) * (state.x.dim() - 1))
    return LangevinState(state.x[flat], state.v[flat] * scale, state.energy[flat], state.force[flat],
                         state.active[flat])
