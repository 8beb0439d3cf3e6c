"""The project's error types: one base, :class:`TKDError`, for every problem a user can fix.

Each message names the file, key or value at fault and says what to do, so the command-line
tools catch ``TKDError`` by type and print its message as one line (no traceback). Anything
else that escapes is a bug and keeps its traceback.
"""

__all__ = [
    "TKDError",
    "ConfigError",
    "CheckpointError",
    "TeacherLoadError",
    "DatasetFormatError",
    "ImageReadError",
    "DatasetNotRegisteredError",
    "KDLossError",
]


class TKDError(Exception):
    """A problem with the user's input (config, files, data); the message says which and why."""


class ConfigError(TKDError, ValueError):
    """A config file or override is wrong: a key that does not exist, a bad value, a missing file."""


class CheckpointError(TKDError, RuntimeError):
    """A weights file is missing, unreadable, or does not fit the model it is loaded into."""


class TeacherLoadError(CheckpointError):
    """The teacher could not be built as configured (never silently random)."""


class DatasetFormatError(TKDError, ValueError):
    """A dataset file, folder or config entry is missing or malformed."""


class ImageReadError(DatasetFormatError):
    """An image listed in a dataset could not be read or decoded."""


class DatasetNotRegisteredError(TKDError, KeyError):
    """A dataset name used in a config is not in detectron2's DatasetCatalog."""

    def __str__(self):
        # KeyError's default str() repr-quotes the message; show it as written.
        return str(self.args[0]) if self.args else ""


class KDLossError(TKDError, FloatingPointError):
    """A loss term became NaN or infinite."""
