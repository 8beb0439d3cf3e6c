"""Training and inference drivers: the Trainer, its hooks, the Predictor, multi-process launch."""
from .allocator import keep_freed_memory
from .hooks import TKDHook
from .launch import launch
from .predictor import Predictor, resize_for_inference
from .setup import log_traceback_to_file, setup_run
from .trainer import Trainer, unwrap_model

__all__ = ["Trainer", "TKDHook", "Predictor", "resize_for_inference", "launch", "log_traceback_to_file", "setup_run",
           "unwrap_model", "keep_freed_memory"]
