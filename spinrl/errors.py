"""Error types. Every user-facing failure is a ``SpinError`` with a one-line message that names
the offending field and says how to fix it; the CLI turns it into exit code 2."""


class SpinError(ValueError):
    """Base class: bad input, bad config, bad file. One line, names the field and the fix."""


class DatasetError(SpinError):
    """A dataset is malformed, corrupted or inconsistent with its metadata."""


class ConfigError(SpinError):
    """A configuration value or flag is invalid."""


class CheckpointError(SpinError):
    """A checkpoint or model directory is missing, corrupted or from another task."""


class MissingExtraError(SpinError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str):
        super().__init__(
            f"optional dependency '{package}' is not installed; install it with: pip install 'spinrl[{extra}]'"
        )
