"""Errors the suite raises for bad input.

Every message names the offending file or config key and says how to fix it. The entry points print these as
``error: <message>`` without a traceback and exit with status 2.
"""


class VadError(Exception):
    """Base class of the suite's user-facing errors."""


class DataError(VadError, ValueError):
    """A dataset, label file or frame on disk is missing, malformed or inconsistent."""


class ConfigError(VadError, ValueError):
    """A configuration value or key is invalid."""
