from igat.training.callbacks import Callback, CallbackList, HistoryCallback
from igat.training.checkpoint import load_checkpoint, save_checkpoint
from igat.training.context import NonFiniteLossError, StepContext
from igat.training.trainer import Trainer, TrainingCancelled, TrainResult, load_ensemble, probe_metrics, train

__all__ = [
    "Callback", "CallbackList", "HistoryCallback", "NonFiniteLossError", "StepContext", "TrainResult",
    "Trainer", "TrainingCancelled", "load_checkpoint", "load_ensemble", "probe_metrics", "save_checkpoint", "train",
]
