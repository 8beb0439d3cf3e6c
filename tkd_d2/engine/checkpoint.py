"""A DetectionCheckpointer whose files are complete or absent, and that loads safely.

* Saves go to a temporary file that is fsync'ed and renamed into place, then the
  ``last_checkpoint`` tag is replaced the same way: a run killed at any moment (even during
  a save) leaves the previous checkpoint as "last", never a truncated file.
* ``.pth`` files are read with ``torch.load(weights_only=True)``: tensors, numbers, strings
  and containers only, no arbitrary pickled code. detectron2 ``.pkl`` model-zoo files are
  Python pickles and *can* run code: load them only from sources you trust.
* Each checkpoint records the class names it was trained for (``thing_classes``), so a
  teacher for other classes is refused (see ``tkd_d2.modeling.teacher``).
"""
import os

import torch

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["SafeCheckpointer", "atomic_torch_save"]


def atomic_torch_save(data, path):
    """``torch.save`` to ``path`` so that a reader sees the old file or the new one, whole."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _atomic_write_text(path, text):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
            if ".pth.tmp." in name or name.startswith("last_checkpoint.tmp."):
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
        _atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            return super()._load_file(filename)  # detectron2 / pycls pickles (trusted sources)
        try:
            loaded = torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
        except Exception as e:
            raise RuntimeError(
                f"Cannot load checkpoint '{filename}': {e}. It may be truncated, not a "
                "PyTorch file, or contain objects other than tensors (only weights-only "
                "checkpoints are accepted)."
            ) from e
        if not isinstance(loaded, dict):
            raise RuntimeError(f"Checkpoint '{filename}' holds a {type(loaded).__name__}, not a dict")
        if "model" not in loaded:
            loaded = {"model": loaded}  # a bare state_dict (e.g. torchvision / ImageNet weights)
        return loaded
