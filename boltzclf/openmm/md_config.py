"""Settings of OpenMM molecular dynamics (plain Langevin MD and parallel tempering)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from boltzclf.core.config import require


@dataclass(frozen=True)
class MDConfig:
    """Langevin MD settings. Units: ns, K, fs, 1/ps, ps.

    ``replicas > 1`` selects parallel tempering (:mod:`boltzclf.openmm.tempering`) between
    ``temperature`` and ``max_temperature``; otherwise plain LangevinMiddleIntegrator MD.
    """

    ns: float
    temperature: float
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    stride_ps: float = 0.1
    seed: int = 0
    equilibration_ps: float = 10.0
    minimize: bool = True
    platform: str = "CPU"
    threads: int = 2
    checkpoint_frames: int = 1000
    replicas: int = 1
    max_temperature: Optional[float] = None

    def __post_init__(self) -> None:
        flags = {"ns": "--ns", "temperature": "--temperature", "timestep_fs": "--timestep-fs",
                 "friction_per_ps": "--friction", "stride_ps": "--stride-ps"}
        for key, flag in flags.items():
            require(math.isfinite(getattr(self, key)) and getattr(self, key) > 0, flag, "must be positive and finite")
        require(math.isfinite(self.equilibration_ps) and self.equilibration_ps >= 0, "--equilibration-ps",
                "must be >= 0 and finite")
        require(self.threads >= 1 and self.checkpoint_frames >= 1, "--threads/--checkpoint-frames",
                "must be >= 1")
        require(math.isclose(self.stride_steps * self.timestep_fs, self.stride_ps * 1000.0, abs_tol=1e-9),
                "--stride-ps",
                f"must be a whole number of {self.timestep_fs} fs timesteps")
        require(self.replicas >= 1, "--replicas", "must be >= 1")
        require(self.replicas == 1 or (self.max_temperature or 0) > self.temperature,
                "--max-temperature", "parallel tempering needs a maximum above --temperature")
        require(self.replicas > 1 or self.max_temperature is None, "--max-temperature",
                "is only used by parallel tempering: give --replicas > 1 or drop it")

    @property
    def stride_steps(self) -> int:
        return max(1, round(self.stride_ps * 1000.0 / self.timestep_fs))

    @property
    def n_frames(self) -> int:
        return max(1, round(self.ns * 1000.0 / self.stride_ps))
