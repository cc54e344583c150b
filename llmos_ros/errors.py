"""Errors of llmos_ros. Command-line tools print these without a traceback."""


class LlmosError(Exception):
    """Base of every error a user can cause (bad input, bad file, bad config)."""


class ConfigError(LlmosError):
    """A config file or value is invalid."""


class InputError(LlmosError):
    """
    One sensor message cannot be used (wrong encoding, size, NaN, rate...).

    `reason` is a short stable key used to count drops (e.g. 'encoding', 'size', 'nan').
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class BagError(LlmosError):
    """A bag cannot be read: missing, corrupt, truncated, or without the topics needed."""


class CheckpointError(LlmosError):
    """A checkpoint is missing, corrupt, or does not match the code or the given config."""
