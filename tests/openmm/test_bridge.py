"""The batched bridge against plain OpenMM Contexts, finite differences and its own policies."""
import numpy as np
import pytest
import torch

from boltzclf.core.errors import BoltzclfError
from boltzclf.energy.bridge import make_bridge, register_backend
from boltzclf.energy.policy import EnergyPolicy, EnergyStats
from boltzclf.openmm import load_system
from boltzclf.openmm.pool import ContextEvaluator

from openmm_testdata import SYSTEM_NAMES, SYSTEMS_DIR


def perturbed(system, n, scale=0.01, seed=0):
    """``n`` configurations: reference positions plus Gaussian noise of ``scale`` nm."""
    rng = np.random.default_rng(seed)
    return system.positions + rng.normal(scale=scale, size=(n, *system.positions.shape))


@pytest.mark.parametrize("name", SYSTEM_NAMES)
def test_pool_energies_equal_plain_reference_context(systems, name):
    """2-worker pool vs a double-precision Reference-platform Context, 100 configurations."""
    system = systems[name]
    x = perturbed(system, 100)
    bridge = make_bridge(system, workers=2)
    try:
        energy = bridge.energy(torch.from_numpy(x)).numpy()
    finally:
        bridge.close()
    reference, _ = ContextEvaluator(system.system, "Reference").evaluate(x)
    reference = reference / system.kT
    relative = np.abs(energy - reference) / np.maximum(np.abs(reference), 1.0)
    assert relative.max() <= 1e-6


@pytest.mark.parametrize("name", SYSTEM_NAMES)
def test_forces_match_finite_differences(systems, name):
    system = systems[name]
    x = torch.from_numpy(perturbed(system, 10, seed=1))
    rng = np.random.default_rng(2)
    v = torch.from_numpy(rng.normal(size=tuple(x.shape)))
    v /= v.flatten(1).norm(dim=1)[:, None, None]
    h = 1e-3
    derivative = (system.energy(x + h * v) - system.energy(x - h * v)) / (2 * h)
    force = system.force(x)
    error = (derivative + (force * v).sum(dim=(1, 2))).abs()
    assert (error <= 1e-4 * force.flatten(1).norm(dim=1)).all()


def test_autograd_backward_is_minus_force(systems):
    system = systems["alanine_dipeptide_implicit"]
    x = torch.from_numpy(perturbed(system, 5)).requires_grad_()
    weights = torch.arange(1.0, 6.0, dtype=torch.float64)
    (system.energy(x) * weights).sum().backward()
    expected = -system.force(x.detach()) * weights[:, None, None]
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=0)


def test_output_follows_input_dtype(systems):
    system = systems["alanine_dipeptide_vacuum"]
    x = torch.from_numpy(perturbed(system, 3)).float()
    assert system.energy(x).dtype == torch.float32
    assert system.force(x).shape == x.shape


def test_pool_with_one_and_two_workers_equals_in_process(systems):
    system = systems["alanine_dipeptide_implicit"]
    x = perturbed(system, 7)
    expected = system.bridge.evaluate(x)
    for workers in (1, 2):
        bridge = make_bridge(system, workers=workers)
        try:
            energy, force = bridge.evaluate(x)
        finally:
            bridge.close()
        np.testing.assert_array_equal(energy, expected[0])
        np.testing.assert_array_equal(force, expected[1])


def test_nan_coordinates_are_rejected_naming_the_entry(systems):
    system = systems["alanine_dipeptide_vacuum"]
    x = torch.from_numpy(perturbed(system, 4))
    x[2, 5, 1] = float("nan")
    with pytest.raises(BoltzclfError, match=r"non-finite.*\[2\]"):
        system.energy(x)


@pytest.mark.parametrize("shape", [(22, 3), (2, 21, 3), (2, 22, 2), (2, 66)])
def test_wrong_shape_is_rejected(systems, shape):
    with pytest.raises(BoltzclfError, match=r"expected shape \(B, 22, 3\)"):
        systems["alanine_dipeptide_vacuum"].energy(torch.zeros(shape, dtype=torch.float64))


def _clashing(system):
    """Two configurations: the reference and one with atoms 0 and 1 on top of each other."""
    x = np.repeat(system.positions[None], 2, axis=0)
    x[1, 1] = x[1, 0] + 1e-4
    return x


def test_policy_report_keeps_huge_energies_and_counts_them():
    system = load_system(SYSTEMS_DIR / "alanine_dipeptide_vacuum.yaml", policy=EnergyPolicy(cap=100.0, huge=1e3))
    energy, _ = system.bridge.evaluate(_clashing(system))
    raw, _ = ContextEvaluator(system.system).evaluate(_clashing(system))
    np.testing.assert_array_equal(energy, raw / system.kT)
    assert energy[1] > 1e3
    assert system.bridge.stats.as_dict()["huge"] == 1
    assert system.bridge.stats.as_dict()["affected_fraction"] == 0.5


def test_policy_cap_is_log_above_cap_and_consistent_with_force():
    policy = EnergyPolicy(mode="cap", cap=100.0, huge=1e3)
    system = load_system(SYSTEMS_DIR / "alanine_dipeptide_vacuum.yaml", policy=policy)
    x = torch.from_numpy(_clashing(system))
    raw, _ = ContextEvaluator(system.system).evaluate(x.numpy())
    energy = system.energy(x)
    assert energy[1] == pytest.approx(100.0 + np.log1p(raw[1] / system.kT - 100.0))
    assert system.bridge.stats.capped == 1
    # capped force is still minus the gradient of the capped energy
    v = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 1e-7
    h = 1.0
    derivative = (system.energy(x + h * v) - system.energy(x - h * v))[1] / (2 * h)
    assert derivative.item() == pytest.approx(-(system.force(x)[1] * v[1]).sum().item(), rel=1e-3)


def test_policy_raise_names_indices():
    system = load_system(SYSTEMS_DIR / "alanine_dipeptide_vacuum.yaml",
                         policy=EnergyPolicy(mode="raise", cap=100.0, huge=1e3))
    with pytest.raises(BoltzclfError, match=r"indices \[1\]"):
        system.bridge.evaluate(_clashing(system))


def test_unknown_backend_is_an_error(systems):
    with pytest.raises(BoltzclfError, match="unknown energy backend 'nope'"):
        make_bridge(systems["alanine_dipeptide_vacuum"], backend="nope")


class _ConstantSeven:
    """A backend whose energy is 7 kT everywhere."""

    def __init__(self, system):
        self.n_atoms, self.stats = system.n_atoms, EnergyStats()

    def energy(self, x):
        return torch.full(x.shape[:1], 7.0, dtype=x.dtype)

    def force(self, x):
        return torch.zeros_like(x)

    def close(self):
        pass


@pytest.mark.parametrize("factory", [_ConstantSeven, f"{__name__}:_ConstantSeven"], ids=["callable", "import-string"])
def test_a_registered_backend_is_used_by_load_system(factory, monkeypatch):
    """Any registered factory, a callable or an import string resolved on use, serves energy()."""
    from boltzclf.energy import bridge

    monkeypatch.setattr(bridge, "_BACKENDS", dict(bridge._BACKENDS))  # registered for this test only
    register_backend("constant-test", factory)
    system = load_system(SYSTEMS_DIR / "alanine_dipeptide_vacuum.yaml", backend="constant-test")
    assert system.energy(torch.zeros(2, 22, 3, dtype=torch.float64)).tolist() == [7.0, 7.0]


def test_pool_worker_errors_are_clear_and_leave_no_stale_replies(systems):
    from boltzclf.openmm.pool import ContextPool

    system = systems["alanine_dipeptide_vacuum"]
    with pytest.raises(BoltzclfError, match="platform 'NoSuchPlatform' is not available"):
        ContextPool(system.system, 1, "NoSuchPlatform")
    with ContextPool(system.system, 2) as pool:
        x = np.repeat(system.positions[None], 4, axis=0)
        with pytest.raises(BoltzclfError, match="OpenMM worker failed"):
            pool.evaluate(x.reshape(4, -1))  # both workers fail on the flattened positions
        moved = x * 1.01
        energy, _ = pool.evaluate(moved)  # the replies of this batch, not of the failed one
        expected, _ = ContextEvaluator(system.system).evaluate(moved)
        np.testing.assert_allclose(energy, expected, rtol=1e-6)


def test_virtual_sites_are_placed_before_evaluation():
    """u = x_site² with the site midway between two atoms at x = 1 and 3 nm: u = 4, force −2 on each
    atom and none on the site (its input coordinates are ignored)."""
    import openmm

    system = openmm.System()
    for mass in (1.0, 1.0, 0.0):
        system.addParticle(mass)
    system.setVirtualSite(2, openmm.TwoParticleAverageSite(0, 1, 0.5, 0.5))
    external = openmm.CustomExternalForce("x^2")
    external.addParticle(2, [])
    system.addForce(external)
    x = np.array([[[1.0, 0, 0], [3.0, 0, 0], [7.0, 0, 0]]])
    energy, force = ContextEvaluator(system, "Reference").evaluate(x)
    assert energy == pytest.approx([4.0])
    np.testing.assert_allclose(force[0, :, 0], [-2.0, -2.0, 0.0], atol=1e-12)


def test_a_dead_pool_worker_is_a_clear_error(systems):
    from boltzclf.openmm.pool import ContextPool

    system = systems["alanine_dipeptide_vacuum"]
    with ContextPool(system.system, 2) as pool:
        pool._procs[1].kill()
        pool._procs[1].join()
        x = np.repeat(system.positions[None], 4, axis=0)
        with pytest.raises(BoltzclfError, match="OpenMM worker failed: worker 1 of 2 is no longer running|the worker process died"):
            pool.evaluate(x)


def test_constrained_systems_are_refused_as_energy_targets(tmp_path):
    """HBonds constraints: exp(-u) over Cartesian coordinates is not the sampled density, so the
    bridge and the torch target refuse the system (an N-H stretched to 0.25 nm costs only 0.13 kT)."""
    from boltzclf.forcefield import torch_target

    spec = tmp_path / "constrained.yaml"
    spec.write_text((SYSTEMS_DIR / "alanine_dipeptide_vacuum.yaml").read_text()
                    .replace("constraints: none", "constraints: HBonds"))
    system = load_system(spec)
    x = torch.as_tensor(system.positions)[None]
    message = r"constrained.yaml: has 12 constraints \(HBonds\), which an energy target .* would ignore"
    with pytest.raises(BoltzclfError, match=message):
        system.energy(x)
    with pytest.raises(BoltzclfError, match=message):
        torch_target(system)
