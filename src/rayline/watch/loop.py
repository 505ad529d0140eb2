"""The closed loop, one step at a time: observe -> triggers -> retrain -> offline gate -> canary
-> promote or roll back.

The journal (`rayline.watch.journal`) is the commit point of every step, written *before* the
step's effects, and every effect is idempotent: a watcher killed anywhere restarts from the
journal's last entry and redoes what that entry says (set the candidate alias and the canary
weight; promote, which is a no-op once done; take the weight back). So there is no half
promotion and no orphaned canary weight. Two watchers at once: the journal's compare-and-swap
lets one claim a step; the other finds it taken. A failing retrain is journaled and leaves
production as it was.

`Hooks` are the side effects (observe, retrain, gate, promote, traffic, live report, tracking),
built from the config by `Hooks.of` and swapped by tests.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from rayline.config import RaylineConfig
from rayline.errors import RaylineError, RegistryError
from rayline.registry import ModelVersion, Registry
from rayline.registry.registry import AliasConflict
from rayline.storage import Storage
from rayline.watch.journal import (CANARY, PROMOTING, RETRAINING, ROLLING_BACK, SETTLED, Entry, Journal,
                                   JournalConflict)
from rayline.watch.policy import Observations, Production, Verdict, canary_verdict, fired_triggers


@dataclass
class Hooks:
    observe: Callable[[Production], Observations]
    retrain: Callable[[list[dict], Entry], ModelVersion]
    gate: Callable[[int], dict]                            # raises RegistryError when refused
    promote: Callable[[int, dict], dict]                   # the gated compare-and-swap, with evidence
    set_traffic: Callable[[list[tuple[str, float]] | None], None]  # None: the serving alias only
    live_report: Callable[[float], dict]                   # since (unix seconds)
    track: Callable[[dict], None] = lambda entry: None     # a settled decision, to MLflow
    clock: Callable[[], float] = time.time

    @classmethod
    def of(cls, cfg: RaylineConfig, storage: Storage, registry: Registry, progress=lambda m: None) -> "Hooks":
        from rayline.watch import effects

        return effects.hooks(cfg, storage, registry, progress)


@dataclass
class Watcher:
    cfg: RaylineConfig
    registry: Registry
    journal: Journal
    hooks: Hooks
    progress: Callable[[str], None] = lambda m: None
    ident: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    _traffic: object = None  # the split this process last applied (it redeploys only on a change)

    @classmethod
    def of(cls, cfg: RaylineConfig, storage: Storage, progress=lambda m: None, hooks: Hooks | None = None) -> "Watcher":
        check_policy(cfg)
        registry = Registry.of(cfg, storage)
        return cls(cfg, registry, Journal(storage, cfg.name, cfg.serve.app_name),
                   hooks or Hooks.of(cfg, storage, registry, progress), progress)

    # ------------------------------------------------------------------ one step
    def step(self, dry_run: bool = False) -> dict:
        """Look once and act (or, with `dry_run`, say what it would do and why)."""
        last = self.journal.last()
        state = last.state if last else None
        if state in (PROMOTING, ROLLING_BACK):
            return self._say(last, "finish", f"resuming: {state} version {last.get('version')}", dry_run) if dry_run \
                else self._finish(last)
        if state == CANARY:
            return self._judge(last, dry_run)
        now = self.hooks.clock()
        if state == RETRAINING and now < last.get("lease_until", 0):
            return {"action": "none", "state": state, "why": f"a retrain is running (watcher {last.get('by')}, "
                    f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(last.get('at_unix', 0)))} UTC)"}
        prod = self._production()
        obs = self.hooks.observe(prod)
        fired = fired_triggers(obs, self.cfg.watch.triggers, self.cfg.task)
        seen = observed(obs)
        if not fired:
            return {"action": "none", "why": "no trigger fired", "production": prod.version, "observed": seen}
        why = "; ".join(f["why"] for f in fired)
        tried = self._tried_already(last, prod, obs)
        if tried:
            return {"action": "none", "why": tried, "production": prod.version, "observed": seen, "triggers": fired}
        if dry_run:
            return {"action": "retrain", "dry_run": True, "why": why, "triggers": fired, "production": prod.version,
                    "observed": seen, "then": self._plan()}
        try:
            claim = self.journal.append(last, RETRAINING, why=why, triggers=fired, production=prod.version, by=self.ident,
                                        lease_until=now + self.cfg.watch.lease_s, observed=seen)
        except JournalConflict:
            return {"action": "none", "why": "another watcher took this step first"}
        self.progress(f"watch: retraining ({why})")
        try:
            mv = self.hooks.retrain(fired, claim)
        except Exception as e:  # noqa: BLE001 - any failure: journaled, production untouched
            return self._settle(claim, "failed", why=f"retrain failed: {type(e).__name__}: {str(e)[:2000]}",
                                triggers=fired, production=prod.version)
        if mv.version == prod.version:
            return self._settle(claim, "unchanged", version=mv.version, production=prod.version, triggers=fired,
                                why="the retrain reproduced the version in service (same data and config)")
        try:
            gate = self.hooks.gate(mv.version)
        except RegistryError as e:
            return self._settle(claim, "rejected", version=mv.version, production=prod.version, triggers=fired,
                                why=f"offline gate: {e}")
        c = self.cfg.watch.canary
        if not c.enabled:
            entry = self.journal.append(claim, PROMOTING, version=mv.version, production=prod.version, triggers=fired,
                                        gate=gate, why="offline gate passed; canary disabled")
            return self._finish(entry)
        entry = self.journal.append(claim, CANARY, version=mv.version, production=prod.version, triggers=fired,
                                    gate=gate, since=self.hooks.clock(), weight=c.weight)
        self._apply_canary(entry)
        self.progress(f"watch: version {mv.version} canaried at {c.weight:g}% beside production {prod.version}")
        return {"action": "canary", "state": CANARY, "version": mv.version, "production": prod.version,
                "weight": c.weight, "why": why, "gate": gate}

    # ------------------------------------------------------------------ canary
    def _judge(self, entry: Entry, dry_run: bool) -> dict:
        if not dry_run:
            self._apply_canary(entry)  # after a restart: the alias and the weight as the journal says
        v, p = entry.get("version"), entry.get("production")
        holder = self.registry.aliases().get(self.cfg.alias)
        if holder not in (p, v):
            verdict = Verdict("rollback", f"{self.cfg.alias!r} moved to version {holder} during the canary", {})
        else:
            since = entry.get("since")
            verdict = canary_verdict(self.hooks.live_report(since), p, v, self.cfg.task, self.cfg.watch.canary,
                                     self.hooks.clock() - since)
        if verdict.action == "wait" or dry_run:
            return {"action": verdict.action, "state": CANARY, "version": v, "production": p, "why": verdict.why,
                    "figures": verdict.figures, **({"dry_run": True} if dry_run else {})}
        try:
            nxt = self.journal.append(entry, PROMOTING if verdict.action == "promote" else ROLLING_BACK, version=v,
                                      production=p, triggers=entry.get("triggers", []), why=verdict.why,
                                      figures=verdict.figures, canary=True)
        except JournalConflict:
            return {"action": "none", "why": "another watcher took this step first"}
        return self._finish(nxt)

    def _apply_canary(self, entry: Entry) -> None:
        c, v = self.cfg.watch.canary, entry.get("version")
        if self.registry.aliases().get(c.alias) != v:
            try:
                self.registry.set_alias(c.alias, v, "canary", watch_seq=entry.seq, triggers=entry.get("triggers", []))
            except AliasConflict:
                pass  # another watcher set it: the next look sees it
        self._set_traffic([(self.cfg.alias, 100 - entry.get("weight", c.weight)), (c.alias, entry.get("weight", c.weight))])

    def _set_traffic(self, arms: list[tuple[str, float]] | None) -> None:
        if self._traffic != (arms or "serving"):
            self.hooks.set_traffic(arms)
            self._traffic = arms or "serving"

    # ------------------------------------------------------------------ decisions
    def _finish(self, entry: Entry) -> dict:
        """Carry out a promotion or a rollback the journal has decided (again, after a restart)."""
        v, details = entry.get("version"), {"by": "watch", "watch_seq": entry.seq, "why": entry.get("why")}
        outcome, why = ("promoted", entry.get("why")) if entry.state == PROMOTING else ("rolled_back", entry.get("why"))
        if entry.state == PROMOTING:
            try:
                details["promotion"] = self.hooks.promote(v, {**details, "live": entry.get("figures")})
            except RegistryError as e:  # the gate, run again at the swap, refused (production changed under us)
                outcome, why = "rolled_back", f"promotion refused: {e}"
        if entry.get("canary"):
            self._set_traffic(None)  # the candidate's weight back to the serving alias
            self._mark_candidate(v, outcome, why)
        return self._settle(entry, outcome, version=v, production=entry.get("production"), why=why,
                            triggers=entry.get("triggers", []), figures=entry.get("figures"),
                            canary=bool(entry.get("canary")))

    def _mark_candidate(self, version: int, outcome: str, why: str) -> None:
        """The verdict in the candidate alias's own history (once, even when resumed)."""
        alias = self.cfg.watch.canary.alias
        state = self.registry.alias_state(alias)
        log = self.registry.alias_log(alias)
        if state.version == version and log and log[-1].get("event") != f"canary_{outcome}":
            try:
                self.registry.change_alias(state, version, f"canary_{outcome}", why=why)
            except AliasConflict:
                pass

    def _settle(self, after: Entry, state: str, **data) -> dict:
        try:
            entry = self.journal.append(after, state, **data)
        except JournalConflict:  # a second watcher resumed the same step and finished it
            return {"action": "none", "why": "another watcher finished this step"}
        self.hooks.track(entry.data)
        self.progress(f"watch: {state}" + (f" version {data['version']}" if data.get("version") else "")
                      + f": {data.get('why')}")
        return {"action": state, "state": state, **data}

    def _tried_already(self, last: Entry | None, prod: Production, obs) -> str | None:
        """A retrain refused by the gate, or one that reproduced production, against this
        production on these very sources is not repeated every look: the same data would give the
        same result. New rows at the sources (or another production) open the way again. A failed
        retrain is retried at the next look (a worker lost, a node gone: it may pass)."""
        if last is None or last.state not in ("rejected", "unchanged") or last.get("production") != prod.version:
            return None
        claim = self.journal.get(last.seq - 1)
        tried_on = ((claim.get("observed") if claim else None) or {}).get("sources_fingerprint")
        if tried_on is None or tried_on != obs.sources_fingerprint:
            return None
        return (f"a retrain on these sources already ended {last.state} (journal step {last.seq}: "
                f"{str(last.get('why'))[:300]}); waiting for new data")

    def _say(self, entry: Entry, action: str, why: str, dry_run: bool) -> dict:
        return {"action": action, "state": entry.state, "why": why, "version": entry.get("version"),
                **({"dry_run": True} if dry_run else {})}

    # ------------------------------------------------------------------ what is in service
    def _production(self) -> Production:
        try:
            v = self.registry.resolve(self.cfg.alias)
        except RegistryError as e:
            raise RaylineError(f"rayline watch: nothing in service to watch ({e}); run the pipeline first") from None
        mv = self.registry.get(v)
        return Production(v, mv.lineage.get("data_fingerprint"), float(mv.lineage.get("created_unix") or 0),
                          mv.metrics.get("test", {}))

    def _plan(self) -> str:
        c = self.cfg.watch.canary
        if not c.enabled:
            return "retrain, offline gate, promote"
        return (f"retrain, offline gate, canary at {c.weight:g}% as {c.alias!r} for {c.min_s:g}-{c.max_s:g}s, "
                f"promote if not worse than production by {c.margin} with {c.confidence:.0%} confidence")


def check_policy(cfg: RaylineConfig) -> None:
    if cfg.watch.canary.alias == cfg.alias:
        raise RaylineError(f"watch.canary.alias: {cfg.watch.canary.alias!r} is the serving alias (alias); "
                           f"the candidate needs an alias of its own")
    if cfg.watch.canary.enabled and cfg.serve.traffic:
        raise RaylineError("watch.canary: the watcher sets the traffic split itself; remove serve.traffic "
                           "(or set watch.canary.enabled=false)")
    r = cfg.watch.retrain
    if (r.window != "all" or r.test_days or r.valid_days) and cfg.data.split.method != "time":
        raise RaylineError(f"watch.retrain: window {r.window!r}, test_days and valid_days need a time split "
                           f"(data.split.method: time, with its column)")
    if r.window == "sliding" and not r.days:
        raise RaylineError("watch.retrain.days: a sliding window needs its length in days")
    if r.valid_days and not r.test_days:
        raise RaylineError("watch.retrain.valid_days: needs watch.retrain.test_days (the validation days precede them)")
    if cfg.watch.canary.min_s > cfg.watch.canary.max_s:
        raise RaylineError(f"watch.canary.min_s ({cfg.watch.canary.min_s:g}) is longer than watch.canary.max_s "
                           f"({cfg.watch.canary.max_s:g})")


def observed(obs: Observations) -> dict:
    """The observations in brief, for the journal and the dry run."""
    out: dict = {"sources_fingerprint": obs.sources_fingerprint, "notes": obs.notes}
    if obs.drift:
        out["drift"] = {"records": obs.drift.get("records_in_window"), "psi_max": obs.drift.get("psi_max")}
    return out


def watch(cfg: RaylineConfig, storage: Storage, *, once: bool = False, dry_run: bool = False,
          progress=lambda m: None, steps: int | None = None, hooks: Hooks | None = None) -> list[dict]:
    """`rayline watch`: step every `watch.interval_s` (once with `once`); returns what each step did."""
    w = Watcher.of(cfg, storage, progress, hooks)
    done: list[dict] = []
    while True:
        out = w.step(dry_run=dry_run)
        done.append(out)
        progress(f"watch: {out['action']}: {out.get('why', '')}")
        if once or (steps is not None and len(done) >= steps):
            return done
        # in flight (a canary being judged): look again soon, not a whole interval later
        wait = cfg.watch.interval_s if out.get("state") in (None, *SETTLED) else min(cfg.watch.interval_s, 30)
        time.sleep(wait)
