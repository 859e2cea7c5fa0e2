"""Settings of batched Langevin dynamics and temperature replica exchange on the torch force field."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from boltzclf.core.config import require

DTYPES = ("float32", "float64")


_FLAGS = {"friction_per_ps": "--friction"}


def _name(key: str) -> str:
    """A field as both its YAML key and its ``boltzclf simulate`` flag, for error messages."""
    return f"{key} ({_FLAGS.get(key, '--' + key.replace('_', '-'))})"


def _whole_steps(interval_ps: float, timestep_fs: float) -> int:
    return max(1, round(interval_ps * 1000.0 / timestep_fs))


@dataclass(frozen=True)
class BatchedMDConfig:
    """Batched BAOAB dynamics (``replicas = 1``) or temperature replica exchange (``replicas > 1``).

    Units: ns, K, fs, 1/ps, ps. ``ns`` is the production length of *every* walker; ``walkers`` is the
    number of independent walkers (columns) per temperature, so ``walkers·replicas`` configurations
    are propagated in one tensor. Replica exchange uses a geometric ladder from ``temperature`` to
    ``max_temperature`` and attempts swaps every ``exchange_ps``. Frames are recorded every
    ``stride_ps`` after ``equilibration_ps``; a checkpoint is written every ``checkpoint_frames``
    frames. ``save_all_temperatures`` also records the frames of the higher temperatures (needed for
    MBAR reweighting across temperatures). ``dtype`` is that of positions and forces (energies,
    kinetic energies and exchange statistics are accumulated in float64). ``compiled`` evaluates
    the force field through ``torch.compile``; ``chunk_size`` bounds the configurations evaluated at
    once (default: from the device, see :meth:`TorchForceField.energy_and_force`).
    """

    ns: float
    temperature: float
    walkers: int = 1024
    replicas: int = 1
    max_temperature: Optional[float] = None
    timestep_fs: float = 1.0
    friction_per_ps: float = 1.0
    stride_ps: float = 1.0
    exchange_ps: float = 0.1
    equilibration_ps: float = 10.0
    seed: int = 0
    minimize: bool = True
    device: str = "auto"
    dtype: str = "float32"
    compiled: bool = True
    chunk_size: Optional[int] = None
    checkpoint_frames: int = 50
    save_all_temperatures: bool = False

    def __post_init__(self) -> None:
        for key in ("ns", "temperature", "timestep_fs", "stride_ps", "exchange_ps", "friction_per_ps"):
            require(math.isfinite(getattr(self, key)) and getattr(self, key) > 0, _name(key),
                    "must be positive and finite")
        require(math.isfinite(self.equilibration_ps) and self.equilibration_ps >= 0, _name("equilibration_ps"),
                "must be >= 0 and finite")
        for key in ("walkers", "replicas", "checkpoint_frames"):
            require(getattr(self, key) >= 1, _name(key), "must be >= 1")
        require(self.chunk_size is None or self.chunk_size >= 1, _name("chunk_size"), "must be >= 1")
        require(self.dtype in DTYPES, _name("dtype"), f"must be one of {', '.join(DTYPES)}")
        require(self.replicas == 1 or (self.max_temperature or 0) > self.temperature,
                _name("max_temperature"), "replica exchange needs a maximum above the temperature")
        require(self.replicas > 1 or self.max_temperature is None, _name("max_temperature"),
                "is only used by replica exchange: set replicas > 1 or drop it")
        for key in ("stride_ps", "exchange_ps", "equilibration_ps"):
            steps = getattr(self, key) * 1000.0 / self.timestep_fs
            require(math.isclose(steps, round(steps), abs_tol=1e-9), _name(key),
                    f"must be a whole number of {self.timestep_fs} fs timesteps")
        if self.replicas > 1:
            require(self.stride_steps % self.exchange_steps == 0, _name("exchange_ps"),
                    "must divide stride_ps (swaps happen between frames' steps, never across them)")

    @property
    def stride_steps(self) -> int:
        """Time steps between recorded frames."""
        return _whole_steps(self.stride_ps, self.timestep_fs)

    @property
    def exchange_steps(self) -> int:
        """Time steps between exchange attempts."""
        return _whole_steps(self.exchange_ps, self.timestep_fs)

    @property
    def equilibration_frames(self) -> int:
        """Unrecorded strides of equilibration (rounded up)."""
        return math.ceil(round(self.equilibration_ps * 1000.0 / self.timestep_fs) / self.stride_steps)

    @property
    def n_frames(self) -> int:
        """Recorded frames per walker."""
        return max(1, round(self.ns * 1000.0 / self.stride_ps))
