"""What a replica is given: its plan (`ReplicaArgs`) and its Serve options, both from the config.

Shared by the app (`serve run`) and the declarative Serve config (`rayline serve`/`deploy`,
`cluster/serve-flights.yaml`, the RayService), so both ask for the same replicas and hand them
the same plan.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from rayline.config import RaylineConfig, ServeConfig, ShadowConfig

DEPLOYMENT = "ModelServer"
# rayline's own replica log: a child of Serve's, so its lines land in the replica's log file, at
# INFO whatever level Serve's logger has (`serve.replica_log_level`).
REPLICA_LOG = "ray.serve.rayline"
REPLICA_ARG = "replica"        # app_builder's argument holding the ReplicaArgs by value
CONFIG_ARG = "rayline_config"  # ... or a whole rayline config by value (compiled to ReplicaArgs there)


class ReplicaArgs(BaseModel):
    """Everything a replica reads, compiled from the config once on the driver: the serve section,
    the model's registry (name and absolute storage root) and the alias it follows. Validated once,
    in `app_builder`; the replica receives the object."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    alias: str
    storage_root: str
    serve: ServeConfig

    @classmethod
    def from_config(cls, cfg: RaylineConfig) -> "ReplicaArgs":
        # The split and the shadow travel in user_config only: a change of weights must not change
        # the replicas' arguments, or Serve would replace the replicas instead of reconfiguring them.
        live = cfg.serve.model_copy(update={"traffic": [], "shadow": ShadowConfig()})
        return cls(name=cfg.name, alias=cfg.alias, storage_root=cfg.storage.root, serve=live)

    def to_json(self) -> dict:
        """By value in a Serve config: the serve section's non-default fields only."""
        return {"name": self.name, "alias": self.alias, "storage_root": self.storage_root,
                "serve": self.serve.model_dump(mode="json", exclude_defaults=True)}


def deployment_options(args: ReplicaArgs, model: str | None = None, sc: ServeConfig | None = None) -> dict:
    """`model` (a version or alias) overrides the alias (and the split) for this deployment; `sc`:
    the config's serve section, whose split and shadow go to user_config."""
    live, sc = sc, args.serve
    a = sc.autoscaling
    return {
        "max_ongoing_requests": sc.max_ongoing_requests,
        "autoscaling_config": {"min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
                               "target_ongoing_requests": a.target_ongoing_requests,
                               "upscale_delay_s": a.upscale_delay_s, "downscale_delay_s": a.downscale_delay_s,
                               "initial_replicas": a.min_replicas or 1},
        "ray_actor_options": {"num_cpus": sc.cpus_per_replica, "num_gpus": sc.gpus_per_replica},
        **({"max_replicas_per_node": sc.max_replicas_per_node} if sc.max_replicas_per_node else {}),
        "logging_config": {"enable_access_log": sc.access_log, "log_level": replica_log_level(sc)},
        # what the replicas follow; changing only this reconfigures live replicas in place
        "user_config": user_config(args, model, live),
    }


def replica_log_level(sc: ServeConfig) -> str:
    """Serve's level in the replicas: the access log's lines are INFO, so turning it on brings INFO."""
    return "INFO" if sc.access_log and sc.replica_log_level in ("WARNING", "ERROR") else sc.replica_log_level


def user_config(args: ReplicaArgs, model: str | None = None, sc: ServeConfig | None = None) -> dict:
    """What replicas follow, live: the alias (or `model`, one pinned reference, which replaces the
    split), the traffic split and the shadow (of `sc`, the config's serve section). Serve calls
    reconfigure() when only this changes."""
    sc = sc or args.serve
    out: dict = {"model": str(model) if model is not None else args.alias, "poll_s": sc.model_poll_s}
    if model is None and sc.traffic:
        out["traffic"] = [a.model_dump() for a in sc.traffic]
    if sc.shadow.alias and sc.shadow.fraction > 0:
        out["shadow"] = {"alias": sc.shadow.alias, "fraction": sc.shadow.fraction}
    return out
