"""The deployment's Serve options, from the config: the one place serving resources are chosen.

Shared by the app (`serve run`) and the declarative Serve config (`rayline serve`/`deploy`,
`cluster/serve-flights.yaml`, the RayService), so both ask for the same replicas.
"""

from __future__ import annotations

from rayline.config import RaylineConfig

DEPLOYMENT = "ModelServer"
CONFIG_ARG = "rayline_config"  # app_builder's argument holding the config by value


def deployment_options(cfg: RaylineConfig, model: str | None = None) -> dict:
    """`model` (a version or alias) overrides the config's alias for this deployment."""
    sc = cfg.serve
    a = sc.autoscaling
    return {
        "max_ongoing_requests": sc.max_ongoing_requests,
        "autoscaling_config": {"min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
                               "target_ongoing_requests": a.target_ongoing_requests,
                               "upscale_delay_s": a.upscale_delay_s, "downscale_delay_s": a.downscale_delay_s,
                               "initial_replicas": a.min_replicas or 1},
        "ray_actor_options": {"num_cpus": sc.cpus_per_replica, "num_gpus": sc.gpus_per_replica},
        **({"max_replicas_per_node": sc.max_replicas_per_node} if sc.max_replicas_per_node else {}),
        # what the replicas follow; changing only this reconfigures live replicas in place
        "user_config": {"model": str(model) if model is not None else cfg.alias, "poll_s": sc.model_poll_s},
    }
