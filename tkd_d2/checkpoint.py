"""The one checkpoint loader and saver.

* :class:`SafeCheckpointer`, detectron2's ``DetectionCheckpointer`` whose files are complete
  or absent: saves go to a temporary file that is fsync'ed and renamed into place, then the
  ``last_checkpoint`` tag is replaced the same way, so a run killed at any moment (even
  during a save) leaves the previous checkpoint as "last", never a truncated file. Each
  checkpoint records the class names it was trained for (``thing_classes``).
* ``.pth`` files are read with ``torch.load(weights_only=True)``: tensors, numbers, strings
  and containers only, no pickled code. detectron2 ``.pkl`` model-zoo files are Python
  pickles and *can* run code: load them only from sources you trust.
* :func:`load_weights`: load a file into a model and check that it fits (every tensor of the
  model present, every shape right), raising :class:`~tkd_d2.errors.CheckpointError` naming
  the file and the tensors otherwise. Training, evaluation, the teacher and the predictors
  all load through it.
"""
import os

import torch

from detectron2.checkpoint import DetectionCheckpointer

from .errors import CheckpointError
from .fileio import atomic_torch_save, atomic_write, is_partial_write

__all__ = ["SafeCheckpointer", "load_weights"]


class SafeCheckpointer(DetectionCheckpointer):
    """Atomic saves, ``weights_only`` loads, and the class names stored with the weights."""

    def __init__(self, model, save_dir="", *, thing_classes=None, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.thing_classes = list(thing_classes) if thing_classes else None
        if save_dir and self.save_to_disk:
            self._remove_partial_saves()

    def _remove_partial_saves(self):
        """Delete what a run killed during a save left behind (never a complete checkpoint)."""
        for name in os.listdir(self.save_dir) if os.path.isdir(self.save_dir) else []:
            if is_partial_write(name) and (".pth" in name or name.startswith("last_checkpoint")):
                os.remove(os.path.join(self.save_dir, name))
                self.logger.info("Removed %s, left by a run killed while saving", name)

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        if self.thing_classes is not None:
            data["thing_classes"] = self.thing_classes
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_torch_save(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            return super()._load_file(filename)  # detectron2 / pycls pickles (trusted sources)
        try:
            loaded = torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
        except Exception as e:
            raise CheckpointError(
                f"Cannot load checkpoint '{filename}': {e}. It may be truncated, not a "
                "PyTorch file, or contain objects other than tensors (only weights-only "
                "checkpoints are accepted)."
            ) from e
        if not isinstance(loaded, dict):
            raise CheckpointError(f"Checkpoint '{filename}' holds a {type(loaded).__name__}, not a dict")
        if "model" not in loaded:
            loaded = {"model": loaded}  # a bare state_dict (e.g. torchvision / ImageNet weights)
        return loaded

    def load_checked(self, path, what="MODEL.WEIGHTS", misfit="", hint=""):
        """Read ``path`` and load its model tensors; raise :class:`CheckpointError` unless
        they fit the model (``misfit``: how that error begins, ``hint``: how it ends).
        Returns the whole checkpoint dict (``thing_classes`` and all)."""
        if not path:
            raise CheckpointError(f"{what} is empty: give the weights file to load")
        if not os.path.isfile(path):
            raise CheckpointError(f"{what}: weights file not found: {path}")
        checkpoint = self._load_file(path)
        num_in_file = len(checkpoint["model"])
        incompatible = self._load_model(checkpoint)
        _check_fit(incompatible, misfit or f"{what} {path}: the weights do not fit the model of "
                  "this config", hint)
        checkpoint["num_in_file"] = num_in_file
        checkpoint["num_matched"] = len(self.model.state_dict()) - len(incompatible.missing_keys)
        return checkpoint


def _check_fit(incompatible, misfit, hint=""):
    """Raise :class:`CheckpointError` (``misfit``: the sentence it begins with) if a load left
    tensors of the model missing or skipped tensors of the wrong shape (``incompatible``:
    fvcore's ``_IncompatibleKeys``)."""
    missing = list(incompatible.missing_keys)
    wrong_shapes = [k for k, *_ in incompatible.incorrect_shapes]
    if not missing and not wrong_shapes:
        return
    detail = []
    if missing:
        detail.append(f"{len(missing)} tensors missing (e.g. {missing[:3]})")
    if wrong_shapes:
        detail.append(f"{len(wrong_shapes)} of the wrong shape (e.g. {wrong_shapes[:3]})")
    raise CheckpointError(
        f"{misfit}: " + "; ".join(detail) + ". Check that the weights were trained with this "
        "config." + (f" {hint}" if hint else "")
    )


def load_weights(model, path, what="MODEL.WEIGHTS"):
    """Load ``path`` into ``model`` (see :meth:`SafeCheckpointer.load_checked`)."""
    return SafeCheckpointer(model).load_checked(path, what=what)
