"""MODEL.EMA: an exponential moving average of the trained model's weights, the weights that
training ends with (as mmdetection's EMAHook and the YOLO trainers do).

Every step the average moves towards the model's parameters and floating buffers by
``1 - d``, with ``d = min(DECAY, (1 + n) / (10 + n))`` after ``n`` updates (the early average
follows the model closely). The average is part of every checkpoint, so a resumed run goes on
with it; after the last step it is copied into the model, so ``model_final.pth``, the
evaluation after training and everything downstream (distilled student, export) use it.
Evaluations during training (TEST.EVAL_PERIOD) see the model's own weights.
"""
import logging

import torch
from detectron2.engine import HookBase

__all__ = ["WeightAverage", "EMAHook"]

logger = logging.getLogger(__name__)


class WeightAverage:
    """The moving average of ``module``'s parameters and persistent floating-point buffers
    (integer buffers, such as counters, are copied)."""

    def __init__(self, module, decay):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"MODEL.EMA.DECAY={decay}: give a value in [0, 1)")
        self.decay = float(decay)
        self.updates = 0
        self._names, self._live = [], []
        # not the buffers a checkpoint leaves out (pixel_mean, ...): they are constants
        transient = {id(b) for m in module.modules() for n, b in m.named_buffers(recurse=False)
                     if n in m._non_persistent_buffers_set}
        seen = set()
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if t is not None and id(t) not in transient and id(t) not in seen:
                seen.add(id(t))
                self._names.append(name)
                self._live.append(t)
        self._avg = [t.detach().clone() for t in self._live]
        # once: the tensors averaged (one foreach call per step) and those copied (counters)
        pairs = list(zip(self._avg, self._live))
        self._lerp = ([a for a, t in pairs if a.is_floating_point()], [t for a, t in pairs if a.is_floating_point()])
        self._copied = [(a, t) for a, t in pairs if not a.is_floating_point()]

    def rate(self):
        """The weight the current model gets in the next update, ``1 - d``."""
        return 1.0 - min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self):
        averages, live = self._lerp
        if averages:
            torch._foreach_lerp_(averages, live, self.rate())
        for a, t in self._copied:
            a.copy_(t)
        self.updates += 1

    @torch.no_grad()
    def copy_to_model(self):
        for a, t in zip(self._avg, self._live):
            t.copy_(a)

    def averages(self):
        return dict(zip(self._names, self._avg))

    def state_dict(self):
        return {"decay": self.decay, "updates": self.updates, "averages": self.averages()}

    @torch.no_grad()
    def load_state_dict(self, state):
        saved = state["averages"]
        missing = [n for n in self._names if n not in saved]
        if missing:
            raise KeyError(f"the checkpoint's MODEL.EMA averages lack {missing[:3]} "
                           f"({len(missing)} of {len(self._names)} tensors)")
        for name, a in zip(self._names, self._avg):
            a.copy_(saved[name])
        self.updates = int(state["updates"])


class EMAHook(HookBase):
    """Keeps a :class:`WeightAverage` of the trainer's model (``module`` inside a DDP wrapper)
    and copies it into the model after the last step, before the final checkpoint is written
    (list this hook before detectron2's PeriodicCheckpointer)."""

    def __init__(self, model, decay):
        self.average = WeightAverage(getattr(model, "module", model), decay)

    def after_step(self):
        self.average.update()
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self.average.copy_to_model()
            logger.info("MODEL.EMA: the model now holds the average of its weights (decay %g, %d updates)",
                        self.average.decay, self.average.updates)
