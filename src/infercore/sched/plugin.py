"""Built-in plugin: the ``scheduler`` component family (``fcfs``, ``priority``)."""

from __future__ import annotations

from typing import Any

from infercore.plugins import hookimpl
from infercore.registry import Family, Registry, component_backend


def _factory(policy: str) -> Any:
    def build(config: Any) -> Any:
        from infercore.cache.manager import KVCacheManager
        from infercore.sched.scheduler import Scheduler

        if "policy" in config.model_fields_set and config.policy != policy:
            raise ValueError(
                f"SchedulerConfig.policy={config.policy!r} contradicts the backend {policy!r}"
            )
        if config.cache is None:
            raise ValueError(
                "create('scheduler', ...) builds the KVCacheManager from SchedulerConfig.cache; "
                "set it (KVCacheConfig(num_blocks=...)) or construct Scheduler(config, cache)"
            )
        config = config.model_copy(update={"policy": policy})
        return Scheduler(config, KVCacheManager(config.cache))

    return build


@hookimpl
def infercore_register(registry: Registry) -> None:
    from infercore.sched.config import SchedulerConfig
    from infercore.sched.protocols import SchedulerProtocol

    registry.add_family(
        Family(
            "scheduler",
            "component",
            "continuous batching with chunked prefill and preemption by recompute",
            SchedulerProtocol,
        )
    )
    for policy, description in (
        ("fcfs", "first come, first served; preempts the newest"),
        ("priority", "smallest priority value first; preempts larger ones for it"),
    ):
        registry.register(
            component_backend(
                "scheduler",
                policy,
                _factory(policy),
                config_class=SchedulerConfig,
                description=description,
            )
        )
