"""Error types. Each names the file, key or value at fault so a researcher can act on one line."""

MAX_LINE = 400


class CfdgError(Exception):
    """Base class: the CLI turns these into one line on stderr and exit code 2."""


class StoreError(CfdgError):
    """A transition store is missing, malformed or inconsistent."""


class DatasetError(CfdgError):
    """An offline dataset file (D4RL HDF5, Minari) is malformed or cannot be found."""


class ConfigError(CfdgError):
    """A parameter in params.yaml or a config mapping is unknown or out of range."""


class CheckpointError(CfdgError):
    """A checkpoint is unreadable or belongs to another model, env or algorithm."""


def one_line(error: BaseException) -> str:
    """The error's message as one line (whitespace runs folded), cut at MAX_LINE characters.

    Messages quote library errors and user values, which can hold newlines; the CLI promises one line.
    """
    text = " ".join(str(error).split())
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."


def warn(message: str) -> None:
    """One line on stderr for what is accepted but must not pass unsaid (e.g. unreadable metadata).

    Not `warnings.warn`: that prints the source line too, and can be filtered away unseen.
    """
    import sys

    print(f"cfdg: warning: {' '.join(message.split())}", file=sys.stderr)
