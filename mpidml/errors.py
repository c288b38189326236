"""One exception hierarchy for expected failures.

An ``MpidmlError`` is a problem the user can fix (bad config, bad data, bad
path). The command line turns it into one line ``mpidml: error: ...`` and exit
code 2 on every rank, without a traceback. Anything else is a bug and aborts
the whole MPI job with a traceback.
"""


class MpidmlError(Exception):
    """Base class: an expected, user-fixable failure (exit code 2)."""

    exit_code = 2


class ConfigError(MpidmlError):
    """Invalid option, config file or combination of options."""


class DataError(MpidmlError):
    """Missing, unreadable or invalid input data."""


class DivergedError(MpidmlError):
    """Loss or gradient became NaN/Inf during training (exit code 3)."""

    exit_code = 3
