"""Run by tests/test_reliability.py: a few TKD iterations in 2 gloo processes, then every
rank writes what it holds so the test can compare ranks.

    python tests/distributed_check.py OUT_DIR TEACHER_YAML TEACHER_WEIGHTS [KEY VALUE ...]
"""
import sys
from pathlib import Path

import tkd_d2  # noqa: F401
import torch
from detectron2.engine import default_setup
from detectron2.utils import comm

from tkd_d2.config import load_config
from tkd_d2.engine import Trainer, launch

ROOT = Path(__file__).resolve().parents[1]


def main(out_dir, teacher_yaml, teacher_weights, opts):
    cfg = load_config(ROOT / "configs/Synthetic/tkd_retinanet_R_50_to_R_18.yaml", list(opts) + [
        "MODEL.TKD.TEACHER.CONFIG", teacher_yaml, "MODEL.TKD.TEACHER.WEIGHTS", teacher_weights,
        "OUTPUT_DIR", out_dir, "MODEL.DEVICE", "cpu",
    ])
    default_setup(cfg, type("Args", (), {"config_file": "", "eval_only": False})())
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    initial = {k: v.detach().clone() for k, v in getattr(trainer.model, "module", trainer.model).named_parameters()}
    trainer.train()
    model = trainer.model
    wrapped = type(model).__name__
    inner = getattr(model, "module", model)
    torch.save({
        "rank": comm.get_rank(),
        "wrapper": wrapped,
        "params": {k: v.detach().clone() for k, v in inner.named_parameters()},
        "initial_params": initial,
        "teacher_wrapped": any(isinstance(m, torch.nn.parallel.DistributedDataParallel)
                               for m in inner.teacher.modules()),
        "teacher_in_ddp_params": len({id(p) for p in inner.teacher.parameters()}
                                     & {id(p) for p in model.parameters()}),
    }, Path(out_dir) / f"rank{comm.get_rank()}.pth")


if __name__ == "__main__":
    out, teacher_yaml, teacher_weights, *opts = sys.argv[1:]
    launch(main, 2, args=(out, teacher_yaml, teacher_weights, opts))
