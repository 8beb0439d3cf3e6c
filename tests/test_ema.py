"""MODEL.EMA: the weight average's arithmetic, its checkpoint state, and the hook that ends
training with it (resume: tests/test_reliability.py)."""
import pytest
import torch
from torch import nn

import tkd_d2  # noqa: F401
from tkd_d2.config import load_config
from tkd_d2.engine.ema import EMAHook, WeightAverage

from helpers import ROOT


def _module():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    return m


def test_average_follows_the_ramped_decay():
    m = _module()
    avg = WeightAverage(m, decay=0.9)
    expected = m[0].weight.detach().clone()
    for n in range(30):
        with torch.no_grad():
            m[0].weight.add_(0.1 * (n + 1))
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * m[0].weight.detach()
        avg.update()
    torch.testing.assert_close(avg.averages()["0.weight"], expected)
    assert avg.updates == 30
    # an integer buffer (BatchNorm's counter) is copied, not averaged
    m[1].num_batches_tracked.fill_(7)
    avg.update()
    assert int(avg.averages()["1.num_batches_tracked"]) == 7


def test_state_round_trip_and_copy_to_model():
    m = _module()
    avg = WeightAverage(m, decay=0.5)
    with torch.no_grad():
        m[0].weight.mul_(3)
    avg.update()
    state = avg.state_dict()
    other = WeightAverage(_module(), decay=0.5)
    other.load_state_dict(state)
    assert other.updates == 1
    for k, v in avg.averages().items():
        assert torch.equal(other.averages()[k], v), k
    avg.copy_to_model()
    assert torch.equal(m[0].weight, avg.averages()["0.weight"])
    with pytest.raises(KeyError, match="lack"):
        WeightAverage(nn.Linear(2, 2), decay=0.5).load_state_dict(state)


def test_bad_decay_is_a_one_line_error():
    with pytest.raises(ValueError, match="MODEL.EMA.DECAY=1.0"):
        WeightAverage(_module(), decay=1.0)


class _Trainer:
    def __init__(self, max_iter):
        self.iter, self.max_iter = 0, max_iter


def test_hook_puts_the_average_into_the_model_after_the_last_step_only():
    m = _module()
    hook = EMAHook(m, decay=0.5)
    hook.trainer = _Trainer(max_iter=3)
    for it in range(3):
        hook.trainer.iter = it
        with torch.no_grad():
            m[0].weight.add_(1.0)
        hook.after_step()
        averaged = torch.equal(m[0].weight, hook.average.averages()["0.weight"])
        assert averaged == (it == 2), it


def test_trainer_lists_the_hook_before_the_checkpointer(tmp_path, monkeypatch):
    from tkd_d2.engine import Trainer

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "data"))  # the synthetic set is written there

    cfg = load_config(ROOT / "configs/Synthetic/retinanet_R_18_FPN.yaml",
                      ["MODEL.EMA.ENABLED", "True", "OUTPUT_DIR", str(tmp_path), "DATALOADER.NUM_WORKERS", "0",
                       "DATASETS.SYNTHETIC.NUM_TRAIN", "4", "DATASETS.SYNTHETIC.NUM_TEST", "2",
                       "DATASETS.SYNTHETIC.IMAGE_SIZE", "64"])
    names = [type(h).__name__ for h in Trainer(cfg)._hooks]
    assert names.index("EMAHook") < names.index("PeriodicCheckpointer") < names.index("EvalHook")
