"""Engine: plain functions that train and evaluate a detector and return dicts."""

from .evaluate import evaluate, predict_loader
from .train import ModelEma, TrainResult, build_optimizer, seed_everything, train, train_one_epoch

__all__ = ["ModelEma", "TrainResult", "build_optimizer", "evaluate", "predict_loader", "seed_everything", "train",
           "train_one_epoch"]
