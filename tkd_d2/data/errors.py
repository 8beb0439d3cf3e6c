"""Errors raised for bad datasets. Each message names the file or entry and says what to do."""

__all__ = ["DatasetFormatError", "ImageReadError", "DatasetNotRegisteredError"]


class DatasetFormatError(ValueError):
    """A dataset file, folder or config entry is missing or malformed."""


class ImageReadError(DatasetFormatError):
    """An image listed in a dataset could not be read or decoded."""


class DatasetNotRegisteredError(KeyError):
    """A dataset name used in a config is not in detectron2's DatasetCatalog."""

    def __str__(self):
        # KeyError's default str() repr-quotes the message; show it as written.
        return str(self.args[0]) if self.args else ""
