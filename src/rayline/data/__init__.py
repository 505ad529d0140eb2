"""The data stage: ingest raw tables into model-ready Parquet and a fitted FeatureSpec."""

from rayline.data.ingest import IngestResult, load_ingest, run_ingest

__all__ = ["IngestResult", "run_ingest", "load_ingest"]
