"""Engine: plain functions that train and evaluate a detector and return dicts."""

from .evaluate import evaluate, predict_loader
from .optim import ModelEma, amp_dtype, build_optimizer
from .state import TrainResult, TrainState
from .train import seed_everything, train, train_one_epoch

__all__ = ["ModelEma", "TrainResult", "TrainState", "amp_dtype", "build_optimizer", "evaluate", "predict_loader",
           "seed_everything", "train", "train_one_epoch"]
