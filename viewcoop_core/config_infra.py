"""Where a run executes and where it is recorded: the Ray and tracking sections.

Kept apart from the method's sections in ``viewcoop_core.config``, which re-exports them;
plain dataclasses with no Ray import, validated like the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from viewcoop_core.config_tree import _require, _require_text


@dataclass
class RayConfig:
    address: str | None = None
    namespace: str = "viewcoop"
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    actor_num_gpus: float | None = None
    actor_num_cpus: float | None = None
    storage_path: str = "runs"
    max_failures: int = 0

    def __post_init__(self) -> None:
        if self.address is not None:
            _require(
                bool(self.address.strip()) and not any(c.isspace() for c in self.address),
                "ray.address",
                self.address,
                "host:port of a Ray head, ray://host:port, 'auto' or 'local'",
            )
        _require_text(self.namespace, "ray.namespace")
        _require(self.num_workers >= 1, "ray.num_workers", self.num_workers, "an int >= 1")
        _require(
            self.cpus_per_worker > 0, "ray.cpus_per_worker", self.cpus_per_worker, "a number > 0"
        )
        for name in ("actor_num_gpus", "actor_num_cpus"):
            value = getattr(self, name)
            _require(value is None or value >= 0, f"ray.{name}", value, "null or a number >= 0")
        _require_text(self.storage_path, "ray.storage_path")
        _require(
            self.max_failures >= -1,
            "ray.max_failures",
            self.max_failures,
            "an int >= 0, or -1 for unlimited retries",
        )


@dataclass
class TrackingConfig:
    tracking_uri: str | None = None
    experiment: str = "viewcoop"

    def __post_init__(self) -> None:
        _require_text(self.experiment, "tracking.experiment")
