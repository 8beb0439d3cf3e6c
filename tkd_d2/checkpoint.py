"""The one checkpoint loader and saver.

* :class:`SafeCheckpointer`, detectron2's ``DetectionCheckpointer`` whose files are complete
  or absent: saves go to a temporary file that is fsync'ed and renamed into place, then the
  ``last_checkpoint`` tag is replaced the same way, so a run killed at any moment (even
  during a save) leaves the previous checkpoint as "last", never a truncated file. Each
  checkpoint records the class names it was trained for (``thing_classes``).
* ``.pth`` files are read with ``torch.load(weights_only=True)``: tensors, numbers, strings
  and containers only, no pickled code. detectron2 ``.pkl`` model-zoo files are Python
  pickles and *can* run code: load them only from sources you trust.
* A ``.pth`` holding a torchvision ResNet state_dict (``torchvision.models.resnet18/34/50/101``,
  bare or under ``"model"``) is renamed to detectron2's ResNet names as detectron2's
  ``tools/convert-torchvision-to-d2.py`` does and loaded by name-matching heuristics, so
  ``MODEL.WEIGHTS`` takes it directly. Bottleneck ResNets (50/101) need
  ``MODEL.RESNETS.STRIDE_IN_1X1 False`` (else :class:`~tkd_d2.errors.CheckpointError`), and
  torchvision's input: ``INPUT.FORMAT "RGB"``, ``MODEL.PIXEL_MEAN [123.675, 116.28, 103.53]``,
  ``MODEL.PIXEL_STD [58.395, 57.12, 57.375]``.
* :func:`load_weights`: load a file into a model and check that it fits (every tensor of the
  model present, every shape right), raising :class:`~tkd_d2.errors.CheckpointError` naming
  the file and the tensors otherwise. Evaluation, resuming, the teacher and the predictors
  load through it; training's ``MODEL.WEIGHTS`` (ImageNet backbone weights, a partial fit by
  design) goes through detectron2's ``resume_or_load``, which logs what it left unloaded.
"""
import os
import re

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
        if _is_torchvision_resnet(loaded["model"]):
            loaded = self._from_torchvision_resnet(loaded, filename)
        return loaded

    def _from_torchvision_resnet(self, loaded, filename):
        """``loaded`` with its torchvision ResNet weights renamed for detectron2's ResNet."""
        state = loaded["model"]
        # torchvision's bottleneck strides in the 3x3 conv: a 1x1 conv1 with stride 2 misfits.
        if "layer1.0.conv3.weight" in state and any(
            n.endswith("res3.0.conv1") and tuple(getattr(m, "stride", ())) != (1, 1)
            for n, m in self.model.named_modules()
        ):
            raise CheckpointError(
                f"Checkpoint '{filename}' holds torchvision bottleneck ResNet weights, which "
                "stride in the 3x3 conv, but this model strides in the 1x1 conv: set "
                "MODEL.RESNETS.STRIDE_IN_1X1 False"
            )
        self.logger.info("Converting torchvision ResNet weights in %s to detectron2's names "
                         "(they expect RGB input normalised with ImageNet mean/std)", filename)
        converted = {_torchvision_to_d2_name(k): v for k, v in state.items()
                     if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
        # Heuristic matching puts "res2.0.conv1.weight" under backbone.bottom_up. (or anywhere).
        return {**loaded, "model": converted, "__author__": "torchvision",
                "matching_heuristics": True}

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


def _is_torchvision_resnet(state):
    """Whether ``state`` is a torchvision ResNet state_dict (stem ``conv1``/``bn1``, ``layerN``)."""
    return all(k in state for k in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight"))


def _torchvision_to_d2_name(name):
    """detectron2's name of a torchvision ResNet tensor (as convert-torchvision-to-d2.py):
    ``bn1.weight`` -> ``stem.conv1.norm.weight``, ``layer1.0.bn2.bias`` ->
    ``res2.0.conv2.norm.bias``, ``layer2.0.downsample.1.weight`` -> ``res3.0.shortcut.norm.weight``."""
    if not name.startswith("layer"):
        name = "stem." + name
    name = re.sub(r"layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", name)
    name = re.sub(r"\bbn(\d)", r"conv\1.norm", name)
    return name.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")


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
