"""What a resumed run needs beyond the weights, so that it continues as if never stopped.

detectron2's ``--resume`` restores the model, the iteration and the LR scheduler. Three
more things decide what the next iterations do, and the Trainer keeps them too:

* the **data position**: detectron2's training samplers restart their index stream at the
  beginning, so a resumed run would see the first batches again. :class:`ResumableSampler`
  replays the stream up to the batch where the run stopped (cheap: indices only, no images),
  including aspect-ratio grouping's half-filled buckets, and continues from there;
* the **random state** of the process (Python, NumPy, torch), which the augmentations draw
  from: :func:`rng_state` / :func:`set_rng_state`, saved in the checkpoint. Exact only in a
  single process with ``DATALOADER.NUM_WORKERS 0``: data-loader workers are reseeded when
  their iterator starts, and ranks > 0 do not write checkpoints;
* the detectors' **loss normalizer**: detectron2's RetinaNet / FCOS divide their losses by an
  EMA of the foreground count held in a plain attribute (``loss_normalizer``), outside the
  state_dict; :func:`loss_normalizers` / :func:`set_loss_normalizers` carry it over;
* the **metric history**: the losses in ``metrics.json`` and on the console are medians over
  the last 20 iterations; :func:`metric_history` / :func:`restore_metric_history` carry that
  window over, so the first values logged after resuming are those of an uninterrupted run.
"""
import itertools
import logging
import random

import numpy as np
import torch
from torch.utils.data import Sampler

from detectron2.utils.events import HistoryBuffer

__all__ = ["ResumableSampler", "rng_state", "set_rng_state", "loss_normalizers", "set_loss_normalizers",
           "metric_history", "restore_metric_history", "METRIC_WINDOW"]

logger = logging.getLogger(__name__)

METRIC_WINDOW = 20  # detectron2's JSONWriter / CommonMetricPrinter smoothing window


class ResumableSampler(Sampler):
    """A training sampler (an infinite index stream) that can start after ``batches`` batches.

    Args:
        sampler: detectron2's training sampler (its stream for this rank).
        batch_size: images per batch on this rank.
        landscape: per dataset index, whether the image is wider than tall (detectron2's
            aspect-ratio grouping key); None when batches are not grouped by aspect ratio.
    """

    def __init__(self, sampler, batch_size, landscape=None):
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.landscape = None if landscape is None else list(landscape)
        self.start_batch = 0

    def resume_at(self, batches):
        """Start the stream after ``batches`` batches (the iterations already trained)."""
        self.start_batch = int(batches)

    def __iter__(self):
        stream = iter(self.sampler)
        if self.start_batch > 0:
            yield from self._replay(stream)
        yield from stream

    def _replay(self, stream):
        """Consume ``stream`` up to the resume point; return the indices that were waiting in
        half-filled aspect-ratio buckets there (to be yielded again, in their order)."""
        if self.landscape is None:
            next(itertools.islice(stream, self.start_batch * self.batch_size - 1, None))
            return []
        buckets, waiting, emitted = {True: [], False: []}, [], 0
        for arrival, index in enumerate(stream):
            bucket = buckets[self.landscape[index]]
            bucket.append((arrival, index))
            if len(bucket) == self.batch_size:
                bucket.clear()
                emitted += 1
                if emitted == self.start_batch:
                    waiting = sorted(buckets[True] + buckets[False])
                    break
        return [index for _, index in waiting]


def rng_state():
    """The process's Python / NumPy / torch random state, as weights-only-loadable data."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state):
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def loss_normalizers(model):
    """``{module name: its loss_normalizer}`` for the modules of ``model`` that keep one."""
    return {name: float(module.loss_normalizer) for name, module in model.named_modules()
            if isinstance(getattr(module, "loss_normalizer", None), (int, float))}


def set_loss_normalizers(model, values):
    """Restore what :func:`loss_normalizers` returned."""
    modules = dict(model.named_modules())
    for name, value in values.items():
        if name in modules:
            modules[name].loss_normalizer = value
        else:
            logger.warning("The checkpoint's loss normalizer of %r matches no module of this model", name)


def metric_history(storage, window=METRIC_WINDOW):
    """The last ``window`` values of every scalar in detectron2's event storage, with its
    smoothing hint: ``{name: [hint, [[value, iteration], ...]]}``."""
    hints = storage.smoothing_hints()
    return {name: [bool(hints.get(name, True)), [[float(v), int(i)] for v, i in buffer.values()[-window:]]]
            for name, buffer in storage.histories().items()}


def restore_metric_history(storage, history):
    """Put what :func:`metric_history` returned back into a fresh event storage (history
    only: nothing is logged again)."""
    for name, (hint, values) in history.items():
        buffer = storage.histories().setdefault(name, HistoryBuffer())
        for value, iteration in values:
            buffer.update(value, iteration)
        storage._smoothing_hints[name] = hint
