"""rayline: one production ML pipeline on one Ray cluster.

Stages (each a module with one public entry point): rayline.data (ingest), rayline.train,
rayline.evaluate, rayline.registry, rayline.serve, rayline.batch. Importing rayline has no
side effects: nothing starts, nothing is written, no environment is read.
"""

__version__ = "0.1.0"
