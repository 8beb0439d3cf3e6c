from .checkpoint import SafeCheckpointer
from .hooks import TKDHook
from .launch import launch
from .trainer import Trainer, unwrap_model

__all__ = ["Trainer", "TKDHook", "SafeCheckpointer", "launch", "unwrap_model"]
