"""User-facing error types.

Everything a user can cause (bad YAML, a missing file, a wrong shape, a corrupt checkpoint) raises a
:class:`BoltzclfError` whose message names the culprit. The CLI prints the message and exits with
status 2; it never prints a traceback for these.
"""


class BoltzclfError(Exception):
    """Bad input: the message says what is wrong and where."""


class ConfigError(BoltzclfError):
    """A configuration file or mapping is malformed, has unknown keys or wrongly typed values."""


class CheckpointError(BoltzclfError):
    """A checkpoint is missing, unreadable or incompatible with the configured model."""


def one_line(error: BaseException | str) -> str:
    """The message of ``error`` on one line (libraries raise multi-line messages; the CLI prints one)."""
    return " ".join(str(error).split())
