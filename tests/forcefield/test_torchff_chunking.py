"""The differentiable torch force field in chunks: the same energies and derivatives as one batch,
with memory that grows with the chunk, not with the batch (issue 13 item 5)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from boltzclf.forcefield import TorchForceField
from boltzclf.openmm import load_system
from forcefield_testdata import SYSTEMS as SYSTEMS_DIR

F64 = torch.float64


@pytest.fixture(scope="module")
def implicit():
    return load_system(SYSTEMS_DIR / "alanine_dipeptide_implicit.yaml")


def test_chunks_give_the_energies_gradients_and_second_derivatives_of_one_batch(implicit):
    field = TorchForceField(implicit.system, gb_path="full_gb")
    generator = torch.Generator().manual_seed(0)
    x0 = torch.as_tensor(implicit.positions, dtype=F64)
    x = (x0 + 0.01 * torch.randn(7, *x0.shape, generator=generator, dtype=F64)).requires_grad_(True)
    lam = torch.linspace(0.1, 0.9, 7, dtype=F64).requires_grad_(True)
    direction = torch.randn(7, *x0.shape, generator=generator, dtype=F64)

    def derivatives(chunk_size):
        energy = field(x, lam, chunk_size=chunk_size)
        grad_x, grad_lam = torch.autograd.grad(energy.sum(), (x, lam), create_graph=True)
        (hessian_direction,) = torch.autograd.grad((grad_x * direction).sum(), x)
        return energy.detach(), grad_x.detach(), grad_lam.detach(), hessian_direction

    whole, chunked = derivatives(7), derivatives(3)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-10)
    assert whole[2].abs().min() > 0  # the λ derivative is not trivially zero


PEAK = """
import json, sys, torch
from boltzclf.forcefield import TorchForceField
from boltzclf.openmm import load_system

def status(key):  # kB
    return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])

system = load_system(sys.argv[1])
field = TorchForceField(system.system)
x = torch.as_tensor(system.positions).expand(int(sys.argv[2]), -1, -1).clone().requires_grad_(True)
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # reset the peak resident size (VmHWM) to the current one
before = status("VmRSS:")
field(x, chunk_size=int(sys.argv[3])).sum().backward()
print(json.dumps((status("VmHWM:") - before) / 1024.0))
"""


def peak_growth_mib(batch: int, chunk_size: int) -> float:
    """Growth of the peak resident memory [MiB] of a fresh process during one forward + backward
    (Linux: the peak is reset just before, through /proc/self/clear_refs)."""
    out = subprocess.run([sys.executable, "-c", PEAK, str(SYSTEMS_DIR / "alanine_dipeptide_implicit.yaml"),
                          str(batch), str(chunk_size)], capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": ""})
    return json.loads(out.stdout)


def test_memory_of_the_differentiable_path_is_bounded_by_the_chunk():
    """B = 4096 alanine dipeptide: one batch keeps ~56·N²·B·8 bytes ≈ 0.9 GB of pairwise
    temporaries for the backward pass; chunks of 256 keep those of one chunk (and the inputs)."""
    whole, chunked = peak_growth_mib(4096, 4096), peak_growth_mib(4096, 256)
    assert whole > 600  # measured 873-959 MiB
    assert chunked < whole / 2  # measured 293-309 MiB: one chunk's temporaries, twice (forward, recompute)
