"""Diffusive Classification (DiffCLF) losses, binary and multi-class (METHOD.md §3).

For each data sample draw k levels t_1..t_k and noisy samples x_j ~ p_{t_j | 0}. The logit matrix
M[b, i, j] = log p̃_θ(t_i, x_j) − f_i (model level i, sample j) is classified with softmax
cross-entropy, sample j labelled j:

    L_clf = −(1/k) Σ_j [M_jj − logsumexp_i M_ij].

For k = 2 this is ½ softplus(ℓ_t(x_s) − ℓ_s(x_s)) + ½ softplus(ℓ_s(x_t) − ℓ_t(x_t)), the bi-level loss.
The minimiser has ℓ_i(x) = log p_{t_i}(x) + c(x): the classifier pins the density *ratios* between
levels pointwise, including the relative weights of separated modes that DSM cannot see. The diagonal
evaluations double as the DSM terms, so the total loss DSM + λ·L_clf costs k score evaluations plus
k(k−1) plain energy evaluations per data sample.

``classify="one"`` classifies only the first of the k samples: k − 1 plain evaluations instead of
k(k − 1). When the k levels are exchangeable (i.i.d. uniform or distinct uniform draws) the first
sample's level is uniform among them, so this is an unbiased estimate of the same objective at a
higher variance (it is not allowed with adjacent pairs, whose order is fixed).
"""
from __future__ import annotations

import torch

from boltzclf.losses.dsm import dsm_terms
from boltzclf.losses.levels import draw_levels, noisy_samples


def classification_loss(logits: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of a ``(B, k, c)`` logit matrix [model level i, sample j] (c ≤ k samples),
    sample j labelled j, averaged over the c samples; returns ``(B,)``."""
    c = logits.shape[-1]
    diagonal = torch.diagonal(logits, dim1=-2, dim2=-1)  # (B, c)
    return -(diagonal - torch.logsumexp(logits, dim=-2)).sum(-1) / c


class DiffusiveClassification:
    """DSM + λ·DiffCLF over k levels per data sample.

    Parameters
    ----------
    k
        Levels per data sample (2 = binary / bi-level).
    weight
        λ, the weight of the classification term.
    pairs
        How levels are drawn: ``"uniform"`` (i.i.d., may coincide; binary default of the reference
        code), ``"adjacent"`` (neighbouring grid levels, k = 2) or ``"distinct"`` (multi-class default).
    shared_noise
        Use one z for all k levels of a sample (ScoreMD variant) instead of independent z (reference
        PyTorch default).
    dsm_weighting
        Weighting of the DSM term (see :mod:`boltzclf.losses.dsm`).
    classify
        ``"all"`` k samples per row (reference) or ``"one"`` (first sample only; cheaper, unbiased for
        exchangeable level draws).
    """

    def __init__(self, k: int = 2, weight: float = 1.0, pairs: str | None = None, shared_noise: bool = False,
                 dsm_weighting: str = "edm", classify: str = "all"):
        if k < 2:
            raise ValueError(f"DiffCLF needs k >= 2 levels, got {k}")
        if classify not in ("all", "one"):
            raise ValueError(f"classify must be 'all' or 'one', got {classify!r}")
        self.k = k
        self.weight = weight
        self.pairs = pairs or ("uniform" if k == 2 else "distinct")
        self.shared_noise = shared_noise
        self.dsm_weighting = dsm_weighting
        self.n_classified = k if classify == "all" else 1
        if self.n_classified < k and self.pairs == "adjacent":
            raise ValueError("classify='one' needs exchangeable levels (uniform or distinct), not adjacent")

    def __call__(self, model, batch: tuple[torch.Tensor, ...], generator: torch.Generator | None
                 ) -> dict[str, torch.Tensor]:
        b, k = batch[0].shape[0], self.k
        levels = draw_levels(model.n_levels, b, k, self.pairs, generator, batch[0].device)
        times, x_t, noise, _ = noisy_samples(model, batch, levels, self.shared_noise, generator)
        dsm, logp_diag = dsm_terms(model, times, x_t, noise, self.dsm_weighting)
        logits = self._logits(model, levels, x_t, logp_diag, self.n_classified)
        clf = classification_loss(logits)
        dsm = dsm.reshape(b, k).mean(1)
        return {"loss": dsm + self.weight * clf, "dsm": dsm.detach(), "clf": clf.detach()}

    @staticmethod
    def _logits(model, levels: torch.Tensor, x_t: torch.Tensor, logp_diag: torch.Tensor, n_columns: int
                ) -> torch.Tensor:
        """M[b, i, j] = log p̃_θ(t_{l_bi}, x_bj) − f_{l_bi} for samples j < ``n_columns``, ``(B, k, n_columns)``;
        the diagonal reuses ``logp_diag``."""
        b, k = levels.shape
        x = x_t.reshape((b, k) + x_t.shape[1:])
        row, col = torch.meshgrid(torch.arange(k), torch.arange(n_columns), indexing="ij")
        off = row != col
        model_level = levels[:, row[off]]  # (B, n_off)
        samples = x[:, col[off]]  # (B, n_off, *event)
        t_off = model.levels[model_level.reshape(-1)].to(x_t.dtype)
        logp_off = model.log_prob_unnormalised(t_off, samples.reshape((-1,) + x_t.shape[1:]))
        logp = x_t.new_empty(b, k, n_columns)
        logp[:, row[off], col[off]] = logp_off.reshape(b, -1)
        diag = torch.arange(n_columns)
        logp[:, diag, diag] = logp_diag.reshape(b, k)[:, :n_columns]
        # index_select, not f[levels]: its backward is index_add_, which adds in a fixed order on CPU,
        # while an indexed gather's backward (index_put_ with accumulate) is thread-order dependent
        # once B·k reaches torch's parallel grain size
        f = torch.index_select(model.free_energies, 0, levels.reshape(-1)).reshape(levels.shape)
        return logp - f.to(x_t.dtype)[:, :, None]
