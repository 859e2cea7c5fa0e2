"""Arguments and helpers shared by CLI commands."""
from __future__ import annotations

import argparse
import json

from boltzclf.core.device import resolve_device


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
