"""Arguments and helpers shared by CLI commands."""
from __future__ import annotations

import argparse
import dataclasses
import json

from boltzclf.core.device import resolve_device
from boltzclf.core.errors import CheckpointError


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda[:N]`` (auto: CUDA when available)."""
    parser.add_argument("--device", default="auto", help="torch device: auto (default), cpu, cuda or cuda:N")


def device_from(args: argparse.Namespace):
    """The torch device chosen by ``--device``."""
    return resolve_device(args.device)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse names the flag and exits with status 2 otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


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


def _experiments(config):
    """Every :class:`~boltzclf.training.config.ExperimentConfig` inside a (workflow) config."""
    from boltzclf.training.config import ExperimentConfig

    if isinstance(config, ExperimentConfig):
        yield config
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        for f in dataclasses.fields(config):
            yield from _experiments(getattr(config, f.name))
    elif isinstance(config, dict):
        for value in config.values():
            yield from _experiments(value)
    elif isinstance(config, (list, tuple)):
        for value in config:
            yield from _experiments(value)


def check_warm_starts(config) -> None:
    """Refuse a missing, corrupt or (analytic targets) ill-fitting ``training.warm_start`` checkpoint of
    any experiment in ``config`` before an output directory is made, so a corrected retry can reuse it.

    Raises
    ------
    CheckpointError
        Naming ``training.warm_start`` and the file.
    """
    from boltzclf.training import checkpoint
    from boltzclf.training.config import build_model

    for experiment in _experiments(config):
        source = experiment.training.warm_start
        if source is None:
            continue
        try:
            state = checkpoint.load(source)
            if experiment.data is None:  # a molecular model needs its system; checked when training starts
                weights = state["ema"] if state["ema"] is not None else state["model"]
                checkpoint.load_weights(build_model(experiment), weights, source)
        except CheckpointError as exc:
            raise CheckpointError(f"training.warm_start: {exc}") from None
