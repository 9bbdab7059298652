"""Errors the suite raises for bad input.

Every message names the offending file or config key and says how to fix it. The entry points print these as
``error: <message>`` without a traceback and exit with status 2.
"""

from collections.abc import Iterator
from contextlib import contextmanager


class VadError(Exception):
    """Base class of the suite's user-facing errors."""


class DataError(VadError, ValueError):
    """A dataset, label file or frame on disk is missing, malformed or inconsistent."""


class ConfigError(VadError, ValueError):
    """A configuration value or key is invalid."""


class RunFolderError(ConfigError):
    """The run folder holds another run: the failure is about the folder, so nothing is written into it."""


@contextmanager
def unwrapped_constructor_errors() -> Iterator[None]:
    """Re-raise a VadError that ``hydra.utils.instantiate`` wrapped in an InstantiationException as itself: the
    constructor's one-line message reads better than Hydra's wrapper around it."""
    from hydra.errors import InstantiationException

    try:
        yield
    except InstantiationException as error:
        if isinstance(error.__cause__, VadError):
            raise error.__cause__ from None
        raise
