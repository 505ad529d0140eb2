"""The closed loop's decisions (pure) and its state machine over a real registry and journal on
disk, with the cluster's side effects (retrain, traffic, live report) replaced by fakes."""

import threading

import pytest

from rayline.config import CanaryConfig, WatchTriggers, config_from_dict
from rayline.errors import RaylineError, RegistryError
from rayline.registry import Registry
from rayline.storage import Storage
from rayline.watch import Hooks, Watcher
from rayline.watch.journal import Journal
from rayline.watch.policy import Observations, Production, canary_verdict, fired_triggers
from tests.conftest import small_config

PROD = Production(version=1, data_fingerprint="k1", registered_unix=1000.0, test={"auc": 0.72})


def _drift(psi_by_feature: dict, records: int = 5000) -> dict:
    return {"records_in_window": records, "window_s": 900,
            "features": {k: {"psi": v} for k, v in psi_by_feature.items()}}


def _live(*entries) -> dict:
    return {"versions": [dict(e) for e in entries]}


def _v(version, requests=2000, errors=0.0, p95=5.0, outcomes=0, auc=None, half=0.02):
    e = {"version": version, "role": "live", "requests": requests, "error_rate": errors,
         "latency_ms": {"p50": p95 / 2, "p95": p95, "p99": p95 * 2}, "outcomes": outcomes}
    if auc is not None:
        e.update(auc=auc, auc_ci95=[auc - half, auc + half])
    return e


# ------------------------------------------------------------------ triggers
def test_each_trigger_fires_on_its_own_evidence_only():
    t = WatchTriggers(drift_psi=0.25, drift_min_records=1000, new_data=True, every_s=3600, live_metric_drop=0.02,
                      min_outcomes=500)
    quiet = Observations(now=2000.0, production=PROD, sources_fingerprint="k1", drift=_drift({"a": 0.05, "b": 0.3}, records=999),
                         live=_live(_v(1, outcomes=499, auc=0.60)))
    assert fired_triggers(quiet, t, "binary") == []     # too few records, too few outcomes, same data, young
    loud = Observations(now=5000.0, production=PROD, sources_fingerprint="k2", drift=_drift({"a": 0.05, "b": 0.31, "c": 0.9}),
                        live=_live(_v(1, outcomes=800, auc=0.69)))
    fired = {f["trigger"]: f for f in fired_triggers(loud, t, "binary")}
    assert set(fired) == {"new_data", "drift", "schedule", "live_metric"}
    assert list(fired["drift"]["psi"]) == ["c", "b"]    # worst first; a (0.05) is not named
    assert fired["live_metric"]["live"] == 0.69 and "0.7200" in fired["live_metric"]["why"]
    off = WatchTriggers(drift_psi=None, new_data=False)
    assert fired_triggers(loud, off, "binary") == []


def test_regression_live_metric_is_a_relative_rmse_rise():
    prod = Production(1, "k", 0.0, {"rmse": 10.0})
    t = WatchTriggers(drift_psi=None, new_data=False, live_metric_drop=0.1, min_outcomes=10)
    live = {"versions": [{"version": 1, "role": "live", "rmse": 10.5, "outcomes": 50}]}
    assert fired_triggers(Observations(0.0, prod, live=live), t, "regression") == []
    live["versions"][0]["rmse"] = 11.5
    assert fired_triggers(Observations(0.0, prod, live=live), t, "regression")[0]["trigger"] == "live_metric"


# ------------------------------------------------------------------ canary verdicts
C = CanaryConfig(min_s=600, max_s=3600, min_requests=500, min_outcomes=500, margin=0.01, confidence=0.95,
                 max_error_rate_increase=0.005, max_latency_ratio=1.5)


def test_no_verdict_before_the_minimum_time_or_traffic():
    good = _live(_v(1, outcomes=900, auc=0.70), _v(2, outcomes=900, auc=0.75))
    assert canary_verdict(good, 1, 2, "binary", C, 599).action == "wait"
    thin = _live(_v(1), _v(2, requests=100))
    assert canary_verdict(thin, 1, 2, "binary", C, 700).action == "wait"
    out = canary_verdict(thin, 1, 2, "binary", C, 3600)
    assert out.action == "rollback" and "not proven in time" in out.why


def test_outcomes_decide_with_the_configured_confidence():
    better = _live(_v(1, outcomes=900, auc=0.70), _v(2, outcomes=900, auc=0.72))
    v = canary_verdict(better, 1, 2, "binary", C, 700)
    assert v.action == "promote" and v.figures["difference"] == pytest.approx(0.02)
    worse = _live(_v(1, outcomes=900, auc=0.72), _v(2, outcomes=900, auc=0.62))
    assert canary_verdict(worse, 1, 2, "binary", C, 700).action == "rollback"
    unclear = _live(_v(1, outcomes=900, auc=0.72, half=0.05), _v(2, outcomes=900, auc=0.715, half=0.05))
    assert canary_verdict(unclear, 1, 2, "binary", C, 700).action == "wait"
    assert canary_verdict(unclear, 1, 2, "binary", C, 3600).action == "rollback"
    few = _live(_v(1, outcomes=900, auc=0.70), _v(2, outcomes=100, auc=0.80))
    assert canary_verdict(few, 1, 2, "binary", C, 700).action == "wait"  # outcomes are coming: wait for them


def test_without_outcomes_errors_and_latency_decide():
    ok = _live(_v(1, errors=0.001), _v(2, errors=0.002, p95=6.0))
    assert canary_verdict(ok, 1, 2, "binary", C, 700).action == "promote"
    errs = _live(_v(1, errors=0.001), _v(2, errors=0.02))
    assert "error rate" in canary_verdict(errs, 1, 2, "binary", C, 700).why
    slow = _live(_v(1, p95=5.0), _v(2, p95=9.0))
    v = canary_verdict(slow, 1, 2, "binary", C, 700)
    assert v.action == "rollback" and "latency" in v.why


# ------------------------------------------------------------------ the state machine
class Fake:
    """The cluster, as the watcher sees it: a registry on disk, traffic and live evidence in memory."""

    def __init__(self, tmp_path, **watch):
        d = small_config(tmp_path, tmp_path)
        d["watch"] = {"canary": {"min_s": 100, "max_s": 1000, "min_requests": 10, "min_outcomes": 10}, **watch}
        self.cfg = config_from_dict(d)
        self.storage = Storage(str(tmp_path / "root"))
        self.registry = Registry.of(self.cfg, self.storage)
        self.prod = self._register(auc=0.70)
        self.registry.set_alias("production", self.prod.version, "promote")
        self.now, self.fired, self.traffic, self.tracked = 10_000.0, True, [], []
        self.candidate_auc, self.retrain_error, self.gate_error = 0.75, None, None
        self.crash_on = None
        self.sources = "k2"

    def _register(self, auc):
        return self.registry.register({"model.bin": b"x"}, {"metric": "auc", "mode": "max", "test": {"auc": auc}},
                                      {"ingest_key": "i1", "data_fingerprint": "k1"})

    def hooks(self) -> Hooks:
        def observe(prod):
            return Observations(self.now, prod, sources_fingerprint=self.sources if self.fired else prod.data_fingerprint)

        def retrain(fired, claim):
            if self.retrain_error:
                raise self.retrain_error
            return self._register(self.candidate_auc)

        def gate(v):
            if self.gate_error:
                raise RegistryError(self.gate_error)
            return {"version": v}

        def promote(v, details):
            self._maybe_crash("promote")
            if self.registry.aliases().get("production") != v:
                self.registry.set_alias("production", v, "promote", **details)
            return {"version": v}

        def set_traffic(arms):
            self._maybe_crash("traffic")
            self.traffic.append(arms)

        def live_report(since):
            prod, cand = self.registry.aliases()["production"], self.registry.aliases().get("candidate")
            return _live(_v(prod, outcomes=900, auc=0.70), _v(cand, outcomes=900, auc=self.candidate_auc))

        return Hooks(observe=observe, retrain=retrain, gate=gate, promote=promote, set_traffic=set_traffic,
                     live_report=live_report, track=self.tracked.append, clock=lambda: self.now)

    def _maybe_crash(self, where):
        if self.crash_on == where:
            self.crash_on = None
            raise SystemExit(f"killed at {where}")

    def watcher(self) -> Watcher:
        return Watcher.of(self.cfg, self.storage, hooks=self.hooks())

    def states(self):
        return [e.state for e in Journal(self.storage, self.cfg.name, self.cfg.serve.app_name).entries()]


def test_trigger_retrain_canary_promote(tmp_path):
    f = Fake(tmp_path)
    w = f.watcher()
    first = w.step()
    assert first["action"] == "canary" and first["weight"] == 10
    cand = first["version"]
    assert f.registry.aliases() == {"production": f.prod.version, "candidate": cand}
    assert f.traffic == [[("production", 90), ("candidate", 10)]]
    assert w.step()["action"] == "wait"                     # the canary's minimum time has not passed
    f.now += 150
    done = w.step()
    assert done["action"] == "promoted" and f.registry.aliases()["production"] == cand
    assert f.traffic[-1] is None                             # the weight went back to the serving alias
    assert f.states() == ["retraining", "canary", "promoting", "promoted"]
    events = [e["event"] for e in f.registry.alias_log("candidate")]
    assert events == ["canary", "canary_promoted"]
    assert f.registry.alias_log("production")[-1]["watch_seq"] == 3     # the decision, in the alias history
    assert [e["state"] for e in f.tracked] == ["promoted"] and "live auc" in f.tracked[0]["why"]
    f.fired = False
    assert w.step() == {"action": "none", "why": "no trigger fired", "production": cand,
                        "observed": {"sources_fingerprint": "k1", "notes": []}}


def test_a_worse_candidate_is_rolled_back_and_production_kept(tmp_path):
    f = Fake(tmp_path)
    f.candidate_auc = 0.60
    w = f.watcher()
    cand = w.step()["version"]
    f.now += 150
    out = w.step()
    assert out["action"] == "rolled_back" and "worse" in out["why"]
    assert f.registry.aliases()["production"] == f.prod.version and f.traffic[-1] is None
    assert [e["event"] for e in f.registry.alias_log("candidate")] == ["canary", "canary_rolled_back"]
    assert f.registry.alias_state("candidate").version == cand


def test_failed_retrain_and_refused_gate_leave_production_untouched(tmp_path):
    f = Fake(tmp_path)
    f.retrain_error = RuntimeError("worker died")
    out = f.watcher().step()
    assert out["action"] == "failed" and "worker died" in out["why"]
    f.retrain_error, f.gate_error = None, "test auc 0.60 vs 0.70"
    out = f.watcher().step()
    assert out["action"] == "rejected" and "0.60 vs 0.70" in out["why"]
    assert f.registry.aliases() == {"production": f.prod.version} and f.traffic == []
    assert f.states() == ["retraining", "failed", "retraining", "rejected"]
    again = f.watcher().step()                        # the same sources: not retrained every look
    assert again["action"] == "none" and "already ended rejected" in again["why"]
    assert f.states() == ["retraining", "failed", "retraining", "rejected"]
    f.sources = "k3"                                  # new rows arrive: the way is open again
    assert f.watcher().step()["action"] == "rejected"


@pytest.mark.parametrize("where,state", [("traffic", "canary"),     # re-applying the weight, mid-canary
                                         ("promote", "promoting")])  # after the verdict was journaled
def test_a_watcher_killed_mid_canary_or_mid_promotion_is_resumed_by_the_next(tmp_path, where, state):
    f = Fake(tmp_path)
    cand = f.watcher().step()["version"]
    f.now += 150
    f.crash_on = where
    with pytest.raises(SystemExit):
        f.watcher().step()
    assert f.states()[-1] == state
    again = f.watcher().step()                                # a new process: resumes from the journal
    assert again["action"] == "promoted" and f.registry.aliases()["production"] == cand
    assert f.traffic[-1] is None
    assert [e["event"] for e in f.registry.alias_log("production")].count("promote") == 2  # v1, then cand once
    assert f.states() == ["retraining", "canary", "promoting", "promoted"]


def test_a_watcher_restarted_during_the_canary_reapplies_its_weight(tmp_path):
    f = Fake(tmp_path)
    f.watcher().step()
    f.traffic.clear()
    out = f.watcher().step()                                  # a fresh process, before the minimum time
    assert out["action"] == "wait" and f.traffic == [[("production", 90), ("candidate", 10)]]


def test_two_watchers_racing_one_acts(tmp_path):
    f = Fake(tmp_path)
    barrier = threading.Barrier(2)
    hooks = [f.hooks(), f.hooks()]
    for h in hooks:
        observe = h.observe

        def observe_together(prod, observe=observe):
            barrier.wait(timeout=10)                           # both have read the same journal state
            return observe(prod)
        h.observe = observe_together
    ws = [Watcher.of(f.cfg, f.storage, hooks=h) for h in hooks]
    out = [None, None]
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, ws[i].step())) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(o["action"] for o in out) == ["canary", "none"]
    assert "another watcher" in next(o for o in out if o["action"] == "none")["why"]
    assert len(f.registry.versions()) == 2 and f.states() == ["retraining", "canary"]
    busy = f.watcher()
    f.now += 0  # the canary is in flight: a third watcher judges it, it does not retrain
    assert busy.step()["action"] == "wait"


def test_a_retrain_in_flight_is_left_alone_until_its_lease_expires(tmp_path):
    f = Fake(tmp_path)
    other = f.watcher()
    inner = {}

    def retrain_and_look(fired, claim):
        inner["out"] = f.watcher().step()                     # a second watcher looks meanwhile
        return f._register(0.75)
    other.hooks.retrain = retrain_and_look
    other.step()
    assert inner["out"]["action"] == "none" and "a retrain is running" in inner["out"]["why"]


def test_dry_run_says_what_and_why_and_writes_nothing(tmp_path):
    f = Fake(tmp_path)
    out = f.watcher().step(dry_run=True)
    assert out["action"] == "retrain" and out["dry_run"] and "sources changed" in out["why"]
    assert "canary at 10%" in out["then"]
    assert f.states() == [] and f.traffic == [] and len(f.registry.versions()) == 1


def test_policy_errors_name_the_field(tmp_path):
    d = small_config(tmp_path, tmp_path)
    d["watch"] = {"canary": {"alias": "production"}}
    with pytest.raises(RaylineError, match="watch.canary.alias"):
        Watcher.of(config_from_dict(d), Storage(str(tmp_path / "r")), hooks=Fake(tmp_path).hooks())
    d["watch"] = {"canary": {"min_s": 10, "max_s": 5}}
    with pytest.raises(RaylineError, match="watch.canary.min_s"):
        Watcher.of(config_from_dict(d), Storage(str(tmp_path / "r")), hooks=Fake(tmp_path).hooks())


# ------------------------------------------------------------------ the data window of a retrain
def test_the_data_window_follows_the_newest_data():
    import datetime as dt

    from rayline.config import RetrainConfig, SplitConfig
    from rayline.watch.policy import data_window

    split = SplitConfig(method="time", column="time_hour", test_from="2013-11-01", valid_from="2013-10-01")
    newest = dt.datetime(2013, 7, 31, 22, tzinfo=dt.timezone.utc)
    held = RetrainConfig(window="all", test_days=31, valid_days=30)
    s, chosen = data_window(split, held, newest)
    assert s.test_from.startswith("2013-07-01") and s.valid_from.startswith("2013-06-01") and s.train_from is None
    assert chosen["newest"].startswith("2013-07-31")
    s, _ = data_window(split, RetrainConfig(window="sliding", days=90, test_days=31, valid_days=30), newest)
    assert s.train_from.startswith("2013-03-03")                         # 90 days before validation
    s, _ = data_window(split, RetrainConfig(window="new_only", test_days=31, valid_days=30), newest,
                       dt.datetime(2013, 4, 30, 23, tzinfo=dt.timezone.utc))
    assert s.train_from.startswith("2013-04-30T23:00:00.000001")         # only rows production never saw
    s, _ = data_window(split, RetrainConfig(window="new_only", test_days=31, valid_days=30), newest,
                       dt.datetime(2013, 6, 15, tzinfo=dt.timezone.utc))
    assert s.train_from is None                                          # nothing new before validation: all
    kept, chosen = data_window(SplitConfig(method="hash"), held, newest)
    assert kept == SplitConfig(method="hash") and chosen["window"] == "all"


def test_a_window_needs_a_time_split(tmp_path):
    d = small_config(tmp_path, tmp_path)                                 # a hash split
    d["watch"] = {"retrain": {"window": "sliding", "days": 30}}
    with pytest.raises(RaylineError, match="watch.retrain.*time split"):
        Watcher.of(config_from_dict(d), Storage(str(tmp_path / "r")), hooks=Fake(tmp_path).hooks())
