"""torch.distributed under ``torchrun``: the process group, this process's rank and device, seeds.

``torchrun --nproc_per_node P -m boltzclf COMMAND ...`` starts P processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment;
:func:`init_from_environment` joins them into one process group (NCCL on CUDA, gloo on CPU) and pins
each process to its GPU. Without those variables everything is a single process of rank 0, and the
functions here cost nothing, so library code calls them unconditionally.

Objects (results, checkpoints' small states) travel over a gloo group on the CPU, also when the
tensors use NCCL, so a rank waiting for rank 0 (:func:`on_main`) does not hold its GPU. Collectives
wait up to ``BOLTZCLF_DIST_TIMEOUT_MIN`` minutes (default 240) before failing: stages that rank 0 runs
alone (evaluations, reports) can take longer than torch's defaults (10 min for NCCL, 30 for gloo).
"""
from __future__ import annotations

import datetime
import functools
import os

import numpy as np
import torch
import torch.distributed as dist

from boltzclf.core.errors import BoltzclfError, one_line


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
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=_timeout())
    return device


def close() -> None:
    """Leave the process group once every rank has reached this point (no-op without one), so no rank
    exits while another still talks to it."""
    if dist.is_initialized():
        barrier()
        dist.destroy_process_group()
        _object_group.cache_clear()


def _timeout() -> datetime.timedelta:
    raw = os.environ.get("BOLTZCLF_DIST_TIMEOUT_MIN", "240")
    try:
        minutes = float(raw)
    except ValueError:
        minutes = -1.0
    if not minutes > 0:
        raise BoltzclfError(f"BOLTZCLF_DIST_TIMEOUT_MIN: must be a positive number of minutes, got {raw!r}")
    return datetime.timedelta(minutes=minutes)


@functools.lru_cache(maxsize=None)
def _object_group():
    """The group that carries Python objects and barriers: gloo on the CPU (the default group when
    that is gloo already)."""
    if dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo", timeout=_timeout())


_solo_depth = 0  # > 0 while rank 0 computes alone inside on_main


def _shared() -> bool:
    """Whether collectives reach the other processes: a process group exists and this process is not
    running a stage alone (:func:`on_main`)."""
    return dist.is_initialized() and _solo_depth == 0


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if _shared() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if _shared() else 1


def is_main() -> bool:
    """Whether this process writes outputs and prints (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op for a single process)."""
    if _shared():
        dist.barrier(group=_object_group())


def broadcast_object(value):
    """Rank 0's ``value`` on every rank (picklable objects)."""
    if not _shared():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=_object_group())
    return box[0]


def all_gather_object(value) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    if not _shared():
        return [value]
    values = [None] * world_size()
    dist.all_gather_object(values, value, group=_object_group())
    return values


def gather_object(value) -> list | None:
    """Every rank's ``value``, in rank order, on rank 0 (None on the others)."""
    if not _shared():
        return [value]
    values = [None] * world_size() if is_main() else None
    dist.gather_object(value, values, dst=0, group=_object_group())
    return values


def on_main(compute, share: bool = True):
    """``compute()`` on rank 0 alone while the other ranks wait (stages no collective runs in:
    evaluation, metrics, reports). Inside it, this module reports one process of rank 0, so code
    that would share its work (distributed SMC, DDP) does it all alone.

    Returns
    -------
    rank 0's value on every rank (``share``), or on rank 0 only (None elsewhere).

    Raises
    ------
    BoltzclfError
        On the other ranks, naming rank 0's error, when ``compute`` raised there (rank 0 re-raises
        its own), so no rank waits for a stage that failed.
    """
    if not _shared():
        return compute()
    if is_main():
        global _solo_depth
        _solo_depth += 1  # code that would share work with the other processes runs alone instead
        try:
            value = compute()
        except BaseException as exc:
            _solo_depth -= 1
            broadcast_object(("failed", f"{type(exc).__name__}: {one_line(exc)}"))
            raise
        _solo_depth -= 1
        broadcast_object(("done", value if share else None))
        return value
    status, payload = broadcast_object(None)
    if status == "failed":
        raise BoltzclfError(f"rank 0 stopped the run: {payload}")
    return payload


def stream_seed(seed: int, stream: int) -> int:
    """Seed of random stream ``stream`` derived from ``seed``: stream 0 is ``seed`` itself (so a
    single-stream run keeps its numbers), the others are independent streams of numpy's SeedSequence."""
    if stream == 0:
        return seed
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, np.uint64)[0] >> 1)


def require_shareable(n: int, what: str, parts: int | None = None) -> None:
    """Refuse ``n`` items (named ``what`` in the message) that ``parts`` processes (default: all of
    them) cannot share equally.

    Raises
    ------
    BoltzclfError
        When ``parts`` does not divide ``n``.
    """
    parts = world_size() if parts is None else parts
    if n % parts:
        raise BoltzclfError(f"{what}: {n} cannot be shared by {parts} processes; use a multiple of {parts}")


def shard(n: int, parts: int, index: int, what: str = "items") -> range:
    """The contiguous block ``index`` of ``range(n)`` split into ``parts`` equal blocks.

    Raises
    ------
    BoltzclfError
        When ``parts`` does not divide ``n`` (naming ``what``).
    """
    require_shareable(n, what, parts)
    size = n // parts
    return range(index * size, (index + 1) * size)
