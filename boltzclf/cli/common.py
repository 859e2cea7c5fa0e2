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


def print_results(results: dict) -> None:
    """Print a results mapping as indented JSON on stdout."""
    print(json.dumps(results, indent=2))
