"""The closed loop's decisions, as pure functions of what was observed: which triggers fire, and
what a canary's live evidence says. No I/O here: `rayline.watch.loop` gathers the observations
and acts, and the unit tests feed these functions by hand."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import datetime as dt

from rayline.config import CanaryConfig, RetrainConfig, SplitConfig, WatchTriggers

Z95 = 1.959963984540054
# The live metric each task is judged by (serve.live's names), and whether higher is better.
LIVE_METRIC = {"binary": ("auc", "max"), "multiclass": ("accuracy", "max"), "regression": ("rmse", "min")}


@dataclass(frozen=True)
class Production:
    """What the watcher knows of the version in service."""
    version: int
    data_fingerprint: str | None       # of the sources it was trained from (lineage)
    registered_unix: float
    test: dict                         # its test metrics (auc, accuracy, rmse, ...)


@dataclass
class Observations:
    now: float
    production: Production
    sources_fingerprint: str | None = None   # the sources' input fingerprint as they are now
    drift: dict | None = None        # the endpoint's drift report (serve.monitor.drift_report)
    live: dict | None = None         # the live report over triggers.live_window_s (serve.live.live_report)
    notes: list[str] = field(default_factory=list)  # what could not be observed, and why


def fired_triggers(obs: Observations, t: WatchTriggers, task: str) -> list[dict]:
    """Each trigger that fires, with the figures that made it fire."""
    fired, prod = [], obs.production
    if t.new_data and obs.sources_fingerprint and prod.data_fingerprint and obs.sources_fingerprint != prod.data_fingerprint:
        fired.append({"trigger": "new_data", "why": f"the sources changed since version {prod.version} was trained",
                      "sources_fingerprint": obs.sources_fingerprint, "trained_on": prod.data_fingerprint})
    if t.drift_psi is not None and obs.drift and obs.drift.get("records_in_window", 0) >= t.drift_min_records:
        psis = {k: v["psi"] for k, v in obs.drift["features"].items() if v.get("psi") is not None}
        over = {k: round(v, 4) for k, v in sorted(psis.items(), key=lambda kv: -kv[1]) if v > t.drift_psi}
        if over:
            fired.append({"trigger": "drift", "why": f"PSI above {t.drift_psi} for {', '.join(over)}",
                          "psi": over, "records": obs.drift["records_in_window"], "window_s": obs.drift.get("window_s")})
    if t.every_s is not None and obs.now - prod.registered_unix >= t.every_s:
        fired.append({"trigger": "schedule", "why": f"version {prod.version} is older than {t.every_s:g}s",
                      "age_s": round(obs.now - prod.registered_unix)})
    if t.live_metric_drop is not None and obs.live:
        name, mode = LIVE_METRIC[task]
        entry = version_entry(obs.live, prod.version)
        live, test = (entry or {}).get(name), prod.test.get(name)
        if entry and live is not None and test is not None and entry.get("outcomes", 0) >= t.min_outcomes:
            drop = (test - live) if mode == "max" else (live - test) / test if test else 0.0
            if drop > t.live_metric_drop:
                fired.append({"trigger": "live_metric", "why": f"live {name} {live:.4f} vs test {test:.4f} "
                              f"(worse by {drop:.4f} > {t.live_metric_drop})", "metric": name, "live": live,
                              "test": test, "outcomes": entry["outcomes"]})
    return fired


def version_entry(report: dict, version: int, role: str = "live") -> dict | None:
    for e in report.get("versions", []):
        if e["version"] == version and e["role"] == role:
            return e
    return None


@dataclass(frozen=True)
class Verdict:
    action: str   # "wait", "promote" or "rollback"
    why: str
    figures: dict


def canary_verdict(report: dict, production: int, candidate: int, task: str, c: CanaryConfig,
                   elapsed_s: float) -> Verdict:
    """Promote only when the candidate is shown not worse than production by `c.margin` with
    `c.confidence` (outcomes where there are enough, else errors and latency); roll back when it
    is shown worse, or when `c.max_s` passes without proof."""
    p, k = version_entry(report, production), version_entry(report, candidate)
    figures = {"elapsed_s": round(elapsed_s), "production": _brief(p), "candidate": _brief(k)}
    timed_out = elapsed_s >= c.max_s
    if elapsed_s < c.min_s:
        return Verdict("wait", f"the canary runs at least {c.min_s:g}s ({elapsed_s:.0f}s so far)", figures)
    if not p or not k or min(p["requests"], k["requests"]) < c.min_requests:
        n = (min(p["requests"], k["requests"]) if p and k else 0)
        why = f"{n} requests for the less-served version, {c.min_requests} needed"
        return Verdict("rollback" if timed_out else "wait", ("not proven in time: " if timed_out else "") + why, figures)
    err = k["error_rate"] - p["error_rate"]
    if err > c.max_error_rate_increase:
        return Verdict("rollback", f"error rate {k['error_rate']:.4f} vs {p['error_rate']:.4f} "
                       f"(+{err:.4f} > {c.max_error_rate_increase})", figures)
    lp, lk = (p.get("latency_ms") or {}).get("p95"), (k.get("latency_ms") or {}).get("p95")
    if lp and lk and lk > lp * c.max_latency_ratio:
        return Verdict("rollback", f"p95 latency {lk:.1f} ms vs {lp:.1f} ms (more than x{c.max_latency_ratio:g})",
                       figures)
    if max(p.get("outcomes", 0), k.get("outcomes", 0)) == 0:  # no outcomes come back: errors and latency decide
        return Verdict("promote", "no outcomes reported; error rate and latency not worse", figures)
    if min(p.get("outcomes", 0), k.get("outcomes", 0)) < c.min_outcomes:
        n = min(p.get("outcomes", 0), k.get("outcomes", 0))
        why = f"{n} outcomes for the less-served version, {c.min_outcomes} needed"
        return Verdict("rollback" if timed_out else "wait", ("not proven in time: " if timed_out else "") + why, figures)
    diff, se, name = _difference(task, p, k)
    if diff is None:
        return Verdict("rollback" if timed_out else "wait", f"live {name} not computable yet", figures)
    z = NormalDist().inv_cdf(c.confidence)
    lower, upper = diff - z * se, diff + z * se
    figures.update(metric=name, difference=diff, difference_interval=[lower, upper], margin=c.margin,
                   confidence=c.confidence)
    if lower > -c.margin:
        return Verdict("promote", f"live {name}: candidate - production = {diff:+.4f}, its {c.confidence:.0%} lower "
                       f"bound {lower:+.4f} above -{c.margin}", figures)
    if upper < -c.margin:
        return Verdict("rollback", f"live {name}: candidate - production = {diff:+.4f}, worse than -{c.margin} "
                       f"with {c.confidence:.0%} confidence", figures)
    why = f"live {name} difference {diff:+.4f} in [{lower:+.4f}, {upper:+.4f}]: not yet decided"
    return Verdict("rollback" if timed_out else "wait", ("not proven in time: " if timed_out else "") + why, figures)


def _difference(task: str, p: dict, k: dict) -> tuple[float | None, float, str]:
    """(candidate minus production, oriented so that positive is better; its standard error; metric)."""
    name, mode = LIVE_METRIC[task]
    vp, vk = p.get(name), k.get(name)
    cp, ck = p.get(f"{name}_ci95"), k.get(f"{name}_ci95")
    if vp is None or vk is None or not cp or not ck or None in (*cp, *ck):
        return None, math.inf, name
    se = math.hypot((cp[1] - cp[0]) / (2 * Z95), (ck[1] - ck[0]) / (2 * Z95))
    if mode == "max":
        return vk - vp, se, name
    return (vp - vk) / vp if vp else 0.0, se / vp if vp else math.inf, name  # RMSE: as a fraction of production's


def _brief(e: dict | None) -> dict | None:
    if not e:
        return None
    keep = ("version", "requests", "error_rate", "latency_ms", "outcomes", "auc", "auc_ci95", "log_loss", "rmse",
            "rmse_ci95", "accuracy", "accuracy_ci95")
    return {k: e[k] for k in keep if k in e}


def data_window(split: SplitConfig, r: RetrainConfig, newest: dt.datetime | None,
                production_newest: dt.datetime | None = None) -> tuple[SplitConfig, dict]:
    """The split a retrain ingests with: the newest `test_days` as test (the newest slice), the
    `valid_days` before them as validation, and training rows per `r.window` (all; the `days`
    before validation; or only rows newer than production's data). Returns (split, what was chosen)."""
    if split.method != "time" or newest is None:
        return split, {"window": "all", "split": split.method}
    if newest.tzinfo is None:
        newest = newest.replace(tzinfo=dt.timezone.utc)
    day = dt.timedelta(days=1)
    end = newest.replace(hour=0, minute=0, second=0, microsecond=0) + day  # the newest day, whole
    update: dict = {"until": None}
    test_from = end - dt.timedelta(days=r.test_days) if r.test_days else None
    if test_from is not None:
        update["test_from"] = test_from.isoformat()
    valid_from = test_from - dt.timedelta(days=r.valid_days) if (r.valid_days and test_from) else None
    if valid_from is not None:
        update["valid_from"] = valid_from.isoformat()
    first_held = valid_from or test_from or parse_time(split.valid_from or split.test_from)
    train_from = None
    if r.window == "sliding" and r.days and first_held is not None:
        train_from = first_held - dt.timedelta(days=r.days)
    elif r.window == "new_only" and production_newest is not None:
        train_from = production_newest + dt.timedelta(microseconds=1)
    if train_from is not None and first_held is not None and train_from >= first_held:
        train_from = None  # nothing new before the held-out days: train on everything instead
    update["train_from"] = train_from.isoformat() if train_from is not None else None
    chosen = {"window": r.window, "newest": newest.isoformat(),
              **{k: v for k, v in update.items() if k != "until" and v is not None}}
    return SplitConfig.model_validate({**split.model_dump(), **update}), chosen


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    t = dt.datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)
