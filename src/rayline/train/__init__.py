"""The training stage: Ray Train (TorchTrainer, DDP) over the ingest's model-ready Parquet."""

from rayline.train.trainer import TrainResult, default_run_name, run_training

__all__ = ["TrainResult", "run_training", "default_run_name"]
