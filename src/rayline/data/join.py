"""Broadcast left joins of small dimension tables onto batches of the primary table.

Dimension tables (weather, planes, airports: thousands of rows) are read once on the driver,
validated, put in the object store and joined onto every batch inside the same map task that
validates it. That costs no shuffle; Ray Data's `Dataset.join` (a hash shuffle of both sides)
is the right tool only when both sides are large, which rayline does not need for a star schema.

The join code itself lives in `rayline.features.lookups`, below the ingest: serving and batch
inference run the same code on the same tables (the ingest's lookup snapshot).
"""

from rayline.features.lookups import PreparedDimension, kind_of, left_join, lookup_rows, prepare_dimension

__all__ = ["PreparedDimension", "kind_of", "left_join", "lookup_rows", "prepare_dimension"]
