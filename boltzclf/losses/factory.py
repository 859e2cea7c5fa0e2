"""Loss configuration (validated from YAML) and construction."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from boltzclf.core.config import require
from boltzclf.core.errors import ConfigError
from boltzclf.losses.ctsm import TimeScoreMatching
from boltzclf.losses.diffclf import DiffusiveClassification
from boltzclf.losses.dsm import DenoisingScoreMatching
from boltzclf.losses.endpoints import Energy, EndpointClassification


@dataclass(frozen=True)
class LossConfig:
    """Which loss to train with.

    kind: ``dsm`` (DSM only), ``diffclf`` (DSM + weight·DiffCLF), ``ctsm`` (DSM + weight·CtSM).
    k: levels per data sample for ``diffclf`` (2 = binary); for ``dsm``/``ctsm`` the batch is
    replicated k times so all methods use the same number of score evaluations per data sample.
    pairs: level scheme for ``diffclf`` (default: uniform for k = 2, distinct for k > 2).
    classify: ``all`` classifies every sample of a row (reference); ``one`` only the first, an
    unbiased, cheaper estimate of the same objective (k − 1 instead of k(k − 1) extra evaluations).
    antithetic: also evaluate DSM at the mirrored noise −z (``dsm`` only).
    endpoints: weight of the true end densities of an interpolant as two extra classes
    (:mod:`boltzclf.losses.endpoints`; ``dsm`` and ``diffclf``, 0 = off); the workflow that owns the
    end-state energies supplies them (the solvation workflow).

    Options a kind does not use (see :data:`USED_OPTIONS`) must keep their defaults: setting one is an
    error, not silently ignored.
    """

    kind: Literal["dsm", "diffclf", "ctsm"] = "dsm"
    weight: float = 1.0
    k: int = 2
    pairs: Literal["uniform", "adjacent", "distinct"] | None = None
    shared_noise: bool = False
    dsm_weighting: Literal["edm", "uniform", "linear", "square"] = "edm"
    antithetic: bool = False
    classify: Literal["all", "one"] = "all"
    endpoints: float = 0.0

    def __post_init__(self):
        require(self.k >= 1, "k", f"must be >= 1, got {self.k}")
        require(self.endpoints >= 0, "endpoints", f"must be >= 0, got {self.endpoints}")
        require(self.weight >= 0, "weight", f"must be >= 0, got {self.weight}")
        require(self.kind != "diffclf" or self.k >= 2, "k", "diffclf needs k >= 2")
        require(self.pairs != "adjacent" or self.k == 2, "pairs", "adjacent pairs need k = 2")
        require(self.pairs != "uniform" or self.k == 2, "pairs",
                "uniform (possibly repeated) levels only for k = 2; use distinct")
        require(self.classify == "all" or self.pairs != "adjacent", "classify",
                "'one' needs exchangeable levels (uniform or distinct), not adjacent pairs")
        fields = LossConfig.__dataclass_fields__
        for key in OPTIONAL_OPTIONS:
            require(key in USED_OPTIONS[self.kind] or getattr(self, key) == fields[key].default, key,
                    f"is not used by kind: {self.kind} (only by {', '.join(_users(key))}); remove it")


#: The options each loss kind reads (``kind`` and ``k`` are used by all).
USED_OPTIONS = {
    "dsm": ("dsm_weighting", "antithetic", "endpoints"),
    "ctsm": ("weight", "dsm_weighting"),
    "diffclf": ("weight", "pairs", "shared_noise", "dsm_weighting", "classify", "endpoints"),
}
OPTIONAL_OPTIONS = ("weight", "pairs", "shared_noise", "dsm_weighting", "antithetic", "classify", "endpoints")


def _users(key: str) -> list[str]:
    return [kind for kind, used in USED_OPTIONS.items() if key in used]


def build_loss(config: LossConfig, end_energies: tuple[Energy, Energy] | None = None):
    """The loss callable described by ``config``; ``end_energies`` (u_0, u_1) for ``endpoints > 0``."""
    if config.kind == "dsm":
        loss = DenoisingScoreMatching(config.dsm_weighting, replicas=config.k, antithetic=config.antithetic)
    elif config.kind == "ctsm":
        loss = TimeScoreMatching(config.weight, replicas=config.k, dsm_weighting=config.dsm_weighting)
    else:
        loss = DiffusiveClassification(config.k, config.weight, config.pairs, config.shared_noise,
                                       config.dsm_weighting, config.classify)
    if config.endpoints == 0:
        return loss
    if end_energies is None:
        raise ConfigError("loss.endpoints: needs the true end-state energies of an interpolant, which only the "
                          "solvation workflow supplies (boltzclf run workflows/aldp_solvation.yaml)")
    return EndpointClassification(loss, *end_energies, weight=config.endpoints)
