"""Batch inference on Ray Data with the registry's models."""

from rayline.batch.predict import BatchResult, run_batch_predict

__all__ = ["BatchResult", "run_batch_predict"]
