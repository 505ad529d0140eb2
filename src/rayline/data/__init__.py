"""The data stage: ingest raw tables into model-ready Parquet and a fitted FeatureSpec.

The entry points load on first use, so importing a helper module of this package (batch
inference reads files through `rayline.data.sources`) does not import the ingest.
"""

__all__ = ["IngestResult", "run_ingest", "load_ingest"]


def __getattr__(name: str):
    if name == "run_ingest":
        from rayline.data import ingest

        return ingest.run_ingest
    if name in __all__:
        from rayline.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'rayline.data' has no attribute {name!r}")
