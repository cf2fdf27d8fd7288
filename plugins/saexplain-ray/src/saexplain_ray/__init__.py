"""saexplain-ray: the `ray` executor, a run's explainers and scorers sharded over a Ray cluster.

    executor: {name: ray, address: local, workers: 4}     # in a run config
    sx.explain(model, sae, executor={"name": "ray", "address": "auto"})

Importing this module stays light: Ray is imported when a run starts (`RayExecutor`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from saexplain import hookimpl
from saexplain.hookspecs import Register

if TYPE_CHECKING:
    from saexplain_ray.collect import ShardingRayExecutor

__all__ = ["make_ray_executor", "register_executors"]


def make_ray_executor(**settings: Any) -> ShardingRayExecutor:
    """Executor factory `ray` (settings: see `RaySettings` and `RayCollectSettings`)."""
    from saexplain_ray.collect import RayCollectSettings, ShardingRayExecutor

    return ShardingRayExecutor(RayCollectSettings.parse(settings))


@hookimpl
def register_executors(register: Register) -> None:
    register(
        "ray",
        make_ray_executor,
        description=(
            "collection, explainers and scorers sharded over a Ray cluster (address: local | auto)"
        ),
    )
