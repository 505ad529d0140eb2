"""Which model version answers a request: a weighted split between aliases, sticky per key.

A request's routing key (a header, or configured fields of its record) hashes to a point u in
[0, 1); the arms, in the configured order, own consecutive stretches of [0, 1) as wide as their
normalized weights. One key therefore always meets one arm while the weights hold, and a weight
change moves only the keys on the stretch that changed hands (90/10 -> 80/20 moves 10 % of the
keys, all from the first arm to the second). A request without a key gets its request id's
point: a fair draw, not sticky.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


def key_point(key: str) -> float:
    """A stable, uniform point in [0, 1) for a key (the same on every replica and every run)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0 ** 64


def routing_key(header_value: str | None, record: dict | None, fields: list[str]) -> str | None:
    """The request's key: the header if sent, else the configured fields of its (first) record."""
    if header_value:
        return header_value[:256]
    if fields and isinstance(record, dict) and any(f in record for f in fields):
        return "\x1f".join(str(record.get(f)) for f in fields)[:1024]
    return None


@dataclass(frozen=True)
class Arm:
    alias: str
    weight: float
    version: int


@dataclass(frozen=True)
class Routes:
    """The arms in service (aliases resolved to versions) and the shadow, swapped as one object."""

    arms: tuple[Arm, ...]
    shadow: Arm | None = None   # weight = the fraction of requests mirrored
    loaded: dict = field(default_factory=dict, compare=False, repr=False)  # version -> its model, swapped with the routes

    @property
    def primary(self) -> Arm:
        """The first arm (the one the configuration lists first: production, as a rule)."""
        return self.arms[0]

    def pick(self, point: float) -> Arm:
        total = sum(a.weight for a in self.arms)
        edge = 0.0
        for arm in self.arms:
            edge += arm.weight / total
            if point < edge and arm.weight > 0:
                return arm
        return next(a for a in reversed(self.arms) if a.weight > 0)  # rounding at the very top

    def versions(self) -> set[int]:
        return {a.version for a in self.arms} | ({self.shadow.version} if self.shadow else set())

    def describe(self) -> dict:
        total = sum(a.weight for a in self.arms)
        return {"arms": [{"alias": a.alias, "version": a.version, "share": a.weight / total} for a in self.arms],
                "shadow": {"alias": self.shadow.alias, "version": self.shadow.version,
                           "fraction": self.shadow.weight} if self.shadow else None}


def traffic_plan(user_config: dict, default_alias: str) -> tuple[list[tuple[str, float]], tuple[str, float] | None]:
    """(arms, shadow) from a deployment's user_config: its `traffic` split if any, else the one
    reference `model` (the alias, or what `rayline deploy --version` pins)."""
    arms = [(str(a["alias"]), float(a["weight"])) for a in user_config.get("traffic") or []]
    arms = arms or [(str(user_config.get("model") or default_alias), 1.0)]
    shadow = user_config.get("shadow") or {}
    fraction = float(shadow.get("fraction") or 0.0)
    return arms, ((str(shadow["alias"]), fraction) if fraction > 0 and shadow.get("alias") else None)
