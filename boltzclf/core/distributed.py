"""torch.distributed under ``torchrun``: the process group, this process's rank and device, seeds.

``torchrun --nproc_per_node P -m boltzclf COMMAND ...`` starts P processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment;
:func:`init_from_environment` joins them into one process group (NCCL on CUDA, gloo on CPU) and pins
each process to its GPU. Without those variables everything is a single process of rank 0, and the
functions here cost nothing, so library code calls them unconditionally.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist

from boltzclf.core.errors import BoltzclfError


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher setting ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device: torch.device) -> torch.device:
    """Join the process group described by the environment (no-op for a single process).

    Returns the device this rank computes on: ``cuda:LOCAL_RANK`` when ``device`` is CUDA, else
    ``device``. Idempotent.

    Raises
    ------
    BoltzclfError
        When there are more ranks on this node than GPUs.
    """
    if not launched_by_torchrun():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise BoltzclfError(f"LOCAL_RANK {local_rank}: this node has {torch.cuda.device_count()} GPU(s); "
                                "start at most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes outputs and prints (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    if dist.is_initialized():
        dist.barrier()


@contextmanager
def main_first():
    """Run the block on rank 0 while the others wait, then on the others (e.g. creating a directory
    that every rank then opens)."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def broadcast_object(value):
    """Rank 0's ``value`` on every rank (picklable objects)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(value) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    if not dist.is_initialized():
        return [value]
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def stream_seed(seed: int, stream: int) -> int:
    """Seed of random stream ``stream`` derived from ``seed``: stream 0 is ``seed`` itself (so a
    single-stream run keeps its numbers), the others are independent streams of numpy's SeedSequence."""
    if stream == 0:
        return seed
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0] >> 1)


def shard(n: int, parts: int, index: int) -> range:
    """The contiguous block ``index`` of ``range(n)`` split into ``parts`` equal blocks.

    Raises
    ------
    BoltzclfError
        When ``parts`` does not divide ``n``.
    """
    if n % parts:
        raise BoltzclfError(f"{n} cannot be split evenly over {parts} processes; choose a multiple of {parts}")
    size = n // parts
    return range(index * size, (index + 1) * size)
