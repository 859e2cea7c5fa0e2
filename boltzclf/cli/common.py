"""Arguments and helpers shared by CLI commands."""
from __future__ import annotations

import argparse
import dataclasses
import json

from boltzclf.core import distributed
from boltzclf.core.device import resolve_device
from boltzclf.core.errors import CheckpointError


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda[:N]`` (auto: CUDA when available)."""
    parser.add_argument("--device", default="auto", help="torch device: auto (default), cpu, cuda or cuda:N")


def device_from(args: argparse.Namespace):
    """The torch device chosen by ``--device``."""
    return resolve_device(args.device)


def _integer(text: str, low: int, high: int | None, rule: str) -> int:
    """``text`` as an integer in ``[low, high)`` (argparse names the flag and exits with status 2 otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low or (high is not None and value >= high):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _integer(text, 1, None, ">= 1")


def seed(text: str) -> int:
    """argparse type: a random seed, an integer in [0, 2**63)."""
    return _integer(text, 0, 2**63, "in [0, 2**63)")


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def print_results(results: dict) -> None:
    """Print a results mapping as indented JSON on stdout."""
    print(json.dumps(results, indent=2))


def _instances(config, kind: type, key: str = ""):
    """``(dotted key, value)`` of every ``kind`` inside a (workflow) config; the key is empty for the
    config itself."""
    def child(name) -> str:
        return f"{key}.{name}" if key else str(name)

    if isinstance(config, kind):
        yield key, config
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        for f in dataclasses.fields(config):
            yield from _instances(getattr(config, f.name), kind, child(f.name))
    elif isinstance(config, dict):
        for name, value in config.items():
            yield from _instances(value, kind, child(name))
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            yield from _instances(value, kind, child(i))


def _experiments(config):
    """``(dotted key, experiment)`` of every :class:`~boltzclf.training.config.ExperimentConfig` in ``config``."""
    from boltzclf.training.config import ExperimentConfig

    return _instances(config, ExperimentConfig)


def _dotted(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def check_processes(config, where: str) -> None:
    """Refuse, before any output exists, a config whose work the ``torchrun`` processes cannot share
    equally: every ``training.shards`` and every batched-dynamics ``walkers`` must be a multiple of
    the number of processes.

    Raises
    ------
    BoltzclfError
        Naming ``where``, the dotted key and the number of processes.
    """
    from boltzclf.dynamics.config import BatchedMDConfig

    counts = [(_dotted(key, "training.shards"), e.training.shards) for key, e in _experiments(config)]
    counts += [(_dotted(key, "walkers"), d.walkers) for key, d in _instances(config, BatchedMDConfig)]
    for dotted, count in counts:
        distributed.require_shareable(count, f"{where}: {dotted}")


def check_warm_starts(config, where: str) -> None:
    """Refuse a missing, corrupt or (analytic targets) ill-fitting ``training.warm_start`` checkpoint of
    any experiment in ``config`` (read from file ``where``) before an output directory is made, so that
    a corrected retry can still use it.

    Raises
    ------
    CheckpointError
        Naming ``where``, the dotted key and the checkpoint file.
    """
    from boltzclf.training import checkpoint
    from boltzclf.training.config import build_model

    for key, experiment in _experiments(config):
        source = experiment.training.warm_start
        if source is None:
            continue
        try:
            state = checkpoint.load(source)
            if experiment.data is None:  # a molecular model needs its system; checked when training starts
                weights = state["ema"] if state["ema"] is not None else state["model"]
                checkpoint.load_weights(build_model(experiment), weights, source)
        except CheckpointError as exc:
            dotted = _dotted(key, "training.warm_start")
            raise CheckpointError(f"{where}: {dotted}: {exc}") from None
