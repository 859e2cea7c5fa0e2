"""Entry point of the ``boltzclf`` command.

Each sub-command lives in its own module of :mod:`boltzclf.cli` exposing
``register(subparsers)`` (adds its parser and sets ``handler``). User errors
(:class:`~boltzclf.core.errors.BoltzclfError`) are printed as one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from boltzclf import __version__
from boltzclf.core import distributed
from boltzclf.core.errors import BoltzclfError

COMMAND_MODULES: tuple[str, ...] = (
    "boltzclf.cli.run",
    "boltzclf.cli.train",
    "boltzclf.cli.evaluate",
    "boltzclf.cli.sample",
    "boltzclf.cli.simulate",
    "boltzclf.cli.pmf",
    "boltzclf.cli.validate_energy",
    "boltzclf.cli.export",
)

EXIT_USER_ERROR = 2


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help lines end with "(default: X)" unless the default is None/False or the help names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="boltzclf",
        description=(
            "Learn time-dependent energies U(t, x) of Boltzmann densities with denoising score "
            "matching + Diffusive Classification, and use them for sampling, PMFs and free energies."
        ),
    )
    parser.add_argument("--version", action="version", version=f"boltzclf {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for command in subparsers.choices.values():
        command.formatter_class = _DefaultsFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the chosen command and return its exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        status = int(args.handler(args) or 0)
        distributed.close()  # every process got here: leave the process group together
        return status
    except BoltzclfError as exc:
        print(f"boltzclf {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
