"""Training and inference drivers: the Trainer, its hooks, the Predictor, multi-process launch."""
from .hooks import TKDHook
from .launch import launch
from .predictor import Predictor
from .trainer import Trainer, unwrap_model

__all__ = ["Trainer", "TKDHook", "Predictor", "launch", "unwrap_model"]
