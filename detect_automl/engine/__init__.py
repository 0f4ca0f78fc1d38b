"""Engine: plain functions that train and evaluate a detector and return dicts."""

from .evaluate import evaluate, predict_loader
from .train import TrainResult, build_optimizer, seed_everything, train, train_one_epoch

__all__ = ["TrainResult", "build_optimizer", "evaluate", "predict_loader", "seed_everything", "train",
           "train_one_epoch"]
