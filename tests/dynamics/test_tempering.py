"""Batched temperature replica exchange: the swap rule against hand-computed Metropolis ratios,
detailed balance on a two-level system, and per-slot thermostats against the exact harmonic law."""
from __future__ import annotations

import math

import pytest
import torch

from boltzclf.dynamics.tempering import ExchangeState, exchange, geometric_ladder
from boltzclf.energy.units import MOLAR_GAS_CONSTANT
from boltzclf.sampling.langevin import LangevinState, baoab_step, init_state, make_dynamics

F64 = torch.float64


def test_geometric_ladder_has_a_constant_ratio_and_the_given_ends():
    t = geometric_ladder(300.0, 600.0, 5)
    assert t[0] == 300.0 and abs(float(t[-1]) - 600.0) < 1e-9
    ratios = t[1:] / t[:-1]
    assert torch.allclose(ratios, torch.full_like(ratios, 2.0 ** 0.25), rtol=1e-12, atol=0)
    assert geometric_ladder(300.0, 300.0, 1).tolist() == [300.0]
    with pytest.raises(ValueError):
        geometric_ladder(300.0, 200.0, 3)


def state_with_potentials(potential_kj: torch.Tensor, t_ref: float) -> LangevinState:
    """Walkers ``(R·W, 1, 3)`` whose x and v carry their own index (to follow them) and whose reduced
    energies at ``t_ref`` are ``potential_kj / kT_ref``."""
    n = potential_kj.numel()
    ident = torch.arange(n, dtype=F64)[:, None, None].expand(n, 1, 3).clone()
    energy = potential_kj.flatten().to(F64) / (MOLAR_GAS_CONSTANT * t_ref)
    return LangevinState(ident, ident.clone(), energy, ident.clone(), torch.ones(n, dtype=torch.bool))


def test_swap_probability_is_the_metropolis_ratio_and_velocities_are_rescaled():
    temps = torch.tensor([300.0, 400.0], dtype=F64)
    walkers = 20000
    # the cold slot holds U = 5 kJ/mol, the hot one U = 10 kJ/mol: a swap would raise the cold
    # slot's energy, so it is accepted with p = exp((1/RT_lo - 1/RT_hi)(U_lo - U_hi)) < 1 (by hand)
    potential = torch.tensor([[5.0], [10.0]], dtype=F64).expand(2, walkers)
    state = state_with_potentials(potential, 300.0)
    ex = ExchangeState.start(2, walkers)
    new = exchange(state, ex, temps, 300.0, torch.Generator().manual_seed(0))
    expected = math.exp((1 / (MOLAR_GAS_CONSTANT * 300) - 1 / (MOLAR_GAS_CONSTANT * 400)) * (5.0 - 10.0))
    swapped = new.x[:walkers, 0, 0] >= walkers  # cold slot now holds a walker that came from the hot slot
    rate = float(swapped.double().mean())
    assert 0.2 < expected < 0.9
    assert abs(rate - expected) <= 4 * math.sqrt(expected * (1 - expected) / walkers)
    assert abs(float(ex.accepted[0] / ex.attempts[0]) - rate) < 1e-12
    # velocities of swapped configurations are rescaled by sqrt(T_new / T_old), the others untouched
    cold_v = new.v[:walkers, 0, 0]
    origin = new.x[:walkers, 0, 0]
    factor = torch.where(swapped, torch.full_like(origin, math.sqrt(300 / 400)), torch.ones_like(origin))
    assert torch.allclose(cold_v, origin * factor, rtol=1e-12, atol=0)
    # the energies travel with their configurations, unchanged (they are in target units)
    assert torch.equal(new.energy[:walkers][swapped], state.energy[walkers:][swapped])
    # the labels follow the swaps
    assert torch.equal(ex.labels[0], swapped.long())


def test_exchange_satisfies_detailed_balance_on_a_two_level_system():
    """Configurations with U in {0, eps}; each slot starts exactly Boltzmann-distributed at its own
    temperature. One exchange must (i) keep each slot's marginal and (ii) make the flux of swaps
    (a, b) -> (b, a) equal to that of (b, a) -> (a, b)."""
    temps = torch.tensor([300.0, 500.0, 900.0], dtype=F64)
    eps = 4.0  # kJ/mol
    walkers = 200000
    gen = torch.Generator().manual_seed(1)
    p_excited = torch.exp(-eps / (MOLAR_GAS_CONSTANT * temps))
    p_excited = p_excited / (1 + p_excited)
    excited = torch.rand(3, walkers, generator=gen, dtype=F64) < p_excited[:, None]
    state = state_with_potentials(eps * excited.to(F64), 300.0)
    ex = ExchangeState.start(3, walkers)
    for attempt in range(2):  # even pairs (0-1), then odd pairs (1-2)
        before = (state.energy.reshape(3, walkers) > 0)
        state = exchange(state, ex, temps, 300.0, gen)
        after = (state.energy.reshape(3, walkers) > 0)
        lo = attempt
        forward = (before[lo] & ~before[lo + 1] & ~after[lo] & after[lo + 1]).sum().item()
        backward = (~before[lo] & before[lo + 1] & after[lo] & ~after[lo + 1]).sum().item()
        assert forward + backward > 1000
        assert abs(forward - backward) <= 4 * math.sqrt(forward + backward)
        for slot in range(3):
            p = float(p_excited[slot])
            assert abs(float(after[slot].double().mean()) - p) <= 4 * math.sqrt(p * (1 - p) / walkers)
    assert ex.n_attempts == 2 and ex.attempts.tolist() == [walkers, walkers]


def test_a_flipped_exchange_rule_breaks_the_detailed_balance_check():
    """The check above can fail: the wrong-sign rule drains the cold slot's ground state."""
    from boltzclf.dynamics import tempering

    temps = torch.tensor([300.0, 900.0], dtype=F64)
    walkers, eps = 200000, 4.0
    gen = torch.Generator().manual_seed(2)
    p = torch.exp(-eps / (MOLAR_GAS_CONSTANT * temps))
    p = p / (1 + p)
    excited = torch.rand(2, walkers, generator=gen, dtype=F64) < p[:, None]
    state = state_with_potentials(eps * excited.to(F64), 300.0)
    original = tempering.swap_acceptance
    try:
        tempering.swap_acceptance = lambda b_lo, b_hi, u_lo, u_hi: original(b_lo, b_hi, u_hi, u_lo)
        after = exchange(state, ExchangeState.start(2, walkers), temps, 300.0, gen)
    finally:
        tempering.swap_acceptance = original
    cold = float((after.energy[:walkers] > 0).double().mean())
    assert abs(cold - float(p[0])) > 10 * math.sqrt(float(p[0] * (1 - p[0])) / walkers)


def test_non_finite_energies_never_swap():
    temps = torch.tensor([300.0, 310.0], dtype=F64)
    potential = torch.tensor([[1.0, math.inf], [math.nan, 2.0]], dtype=F64)
    state = state_with_potentials(potential, 300.0)
    ex = ExchangeState.start(2, 2)
    new = exchange(state, ex, temps, 300.0, torch.Generator().manual_seed(0))
    assert torch.equal(new.x, state.x) and ex.accepted.sum() == 0


def test_inactive_walkers_never_swap():
    temps = torch.tensor([300.0, 600.0], dtype=F64)
    potential = torch.tensor([[50.0], [0.0]], dtype=F64)  # a swap would be accepted with p = 1
    state = state_with_potentials(potential, 300.0)
    state.active[1] = False
    new = exchange(state, ExchangeState.start(2, 1), temps, 300.0, torch.Generator().manual_seed(0))
    assert torch.equal(new.x, state.x)


class Harmonic:
    """U = ½ k |x|² [kJ/mol] for particles ``(B, n, 3)``, reduced at ``t_ref``."""

    def __init__(self, k: float, t_ref: float):
        self.k, self.kT = k, MOLAR_GAS_CONSTANT * t_ref

    def energy_and_force(self, x):
        return 0.5 * self.k * (x * x).flatten(1).sum(1) / self.kT, -self.k * x / self.kT


def test_per_slot_thermostats_with_exchanges_give_each_slot_its_own_boltzmann_law():
    """BAOAB samples a harmonic well exactly, so <x²> per coordinate must be kT_slot/k in every slot,
    with exchanges mixing the walkers between slots; a thermostat at the target's kT everywhere
    (the bug this guards) would give kT_ref/k in every slot."""
    temps = geometric_ladder(300.0, 600.0, 3)
    walkers, k = 512, 500.0  # kJ/mol/nm²
    target = Harmonic(k, 300.0)
    gen = torch.Generator().manual_seed(3)
    x0 = torch.zeros(3 * walkers, 2, 3, dtype=F64)
    dyn = make_dynamics(x0, 0.002, 5.0, 300.0, torch.tensor([12.0, 16.0], dtype=F64),
                        bath_temperatures=temps.repeat_interleave(walkers))
    state = init_state(target, x0, dyn, gen)
    ex = ExchangeState.start(3, walkers)
    second = torch.zeros(3, dtype=F64)
    n_samples = 0
    for step in range(1500):
        state, _ = baoab_step(target, state, dyn, gen)
        if step % 10 == 0:
            state = exchange(state, ex, temps, 300.0, gen)
        if step >= 500 and step % 25 == 0:  # 0.05 ps apart; the well's period is ~1 ps
            second += (state.x.reshape(3, walkers, -1) ** 2).mean((1, 2))
            n_samples += 1
    measured = second / n_samples
    exact = MOLAR_GAS_CONSTANT * temps / k
    # 40 samples x 512 walkers x 6 coordinates, strongly damped: use a generous but discriminating bound
    assert torch.allclose(measured, exact, rtol=0.05, atol=0)
    assert float(ex.accepted.sum()) > 0
    assert not torch.allclose(exact[1:], exact[:1].expand(2), rtol=0.1)
