"""An E(3)-equivariant graph network (EGNN, Satorras et al. 2021) for molecular energies.

Why the energy is exactly E(3)-invariant
----------------------------------------
:class:`~boltzclf.models.energy.EnergyModel` evaluates, for particles,

    U_θ(t, x) = ‖x_c‖²/(2v) + (d/2) log(2π v) + w(t) ⟨NN_θ(c, x̃), x̃⟩,    x̃ = x_c / √v,

where x_c is x with its centre of geometry removed. Let g act on the atoms of ``x`` ``(n, 3)`` by
g·x = x Rᵀ + 1 bᵀ with R orthogonal (a rotation, or a reflection if det R = −1) and b a translation.

* Centring removes b and commutes with R: (x Rᵀ + 1 bᵀ)_c = x_c Rᵀ, so x̃ ↦ x̃ Rᵀ.
* ‖x_c Rᵀ‖ = ‖x_c‖, so the Gaussian part is invariant.
* This network is equivariant, NN(c, x̃ Rᵀ) = NN(c, x̃) Rᵀ (it is built only from the invariants
  ‖x_i − x_j‖², atom and bond types and c, and moves atoms along the differences x_i − x_j), so
  ⟨NN Rᵀ, x̃ Rᵀ⟩ = tr(NN Rᵀ R x̃ᵀ) = ⟨NN, x̃⟩ because RᵀR = I.

Hence U_θ(t, g·x) = U_θ(t, x) exactly (up to floating-point rounding) for every g in E(3), and the
score −∇ₓU, the gradient of an invariant function, is equivariant: s(t, g·x) = s(t, x) Rᵀ.

The network's output is the total displacement x_L − x_0 of the atoms through the L layers. It is
rotation-equivariant and translation-invariant, and it is exactly zero at initialisation because the
last layer of every coordinate MLP φ_x is zero-initialised, so a fresh EnergyModel is its Gaussian base.

Implementation notes
--------------------
Molecules are small (n ≲ 200 atoms), so the graph is fully connected and all edge quantities are dense
``(B, n, n, ·)`` tensors; aggregation is a sum over the neighbour axis with the diagonal (i = j) masked
out. No scatter/gather with accumulation is used (``index_add_``, ``scatter_add``, embedding lookups):
on CPU these accumulate in a thread-dependent order, so two runs with the same seed would differ in
the last bits. Atom types and bond flags enter through products with fixed one-hot matrices instead.
The first linear map of φ_e acts on the concatenation [h_i, h_j, ‖x_i − x_j‖², e_ij]; it is split into
its blocks (W_i h_i + W_j h_j + w_d ‖x_i − x_j‖² + W_e e_ij + b), which is the same map but never
materialises the concatenation on the B n² edges. Aggregated messages and coordinate updates are
divided by n − 1 (a constant), so the scale of the updates does not grow with the molecule's size.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from boltzclf.models.networks import SinusoidalEmbedding

#: Added to squared distances before the square root, so ‖x_i − x_j‖ stays differentiable (twice) at
#: coinciding atoms (the diagonal, or x = 0); it shifts distances of ~1 by ~1e-8 relative.
_DIST_EPS = 1e-8


def _check_topology(atom_types: Sequence[int], bonds: Sequence[tuple[int, int]]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and convert the molecular graph.

    Parameters
    ----------
    atom_types
        Non-negative integer element class per atom, length n.
    bonds
        Pairs ``(i, j)`` of atom indices, ``0 ≤ i, j < n``, ``i ≠ j``.

    Returns
    -------
    types, bond_index
        ``(n,)`` and ``(n_bonds, 2)`` int64 tensors.
    """
    types = torch.as_tensor(list(atom_types), dtype=torch.long)
    if types.dim() != 1 or types.numel() < 2:
        raise ValueError(f"atom_types must be a sequence of at least 2 integers, got shape {tuple(types.shape)}")
    if (types < 0).any():
        raise ValueError("atom_types must be non-negative")
    bond_index = torch.as_tensor([tuple(b) for b in bonds], dtype=torch.long).reshape(-1, 2)
    n = types.numel()
    if bond_index.numel() and ((bond_index < 0).any() or (bond_index >= n).any()):
        raise ValueError(f"bond indices must lie in [0, {n}), got {bond_index.tolist()}")
    if (bond_index[:, 0] == bond_index[:, 1]).any():
        raise ValueError("a bond must join two different atoms")
    return types, bond_index


def bond_adjacency(n_atoms: int, bond_index: torch.Tensor) -> torch.Tensor:
    """Symmetric 0/1 bond matrix.

    Parameters
    ----------
    n_atoms
        Number of atoms n.
    bond_index
        ``(n_bonds, 2)`` int64 atom pairs.

    Returns
    -------
    torch.Tensor
        ``(n, n)`` float32, 1 where atoms i and j are bonded.
    """
    adjacency = torch.zeros(n_atoms, n_atoms)
    adjacency[bond_index[:, 0], bond_index[:, 1]] = 1.0  # construction only: no autograd, no accumulation
    adjacency[bond_index[:, 1], bond_index[:, 0]] = 1.0
    return adjacency


def pairwise_geometry(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Differences, squared distances and (regularised) distances of all atom pairs.

    Parameters
    ----------
    x
        ``(B, n, 3)`` coordinates.

    Returns
    -------
    diff, d2, dist
        x_i − x_j ``(B, n, n, 3)``; ‖x_i − x_j‖² ``(B, n, n, 1)`` (exactly 0 on the diagonal);
        √(‖x_i − x_j‖² + ε) ``(B, n, n, 1)``.
    """
    diff = x[:, :, None, :] - x[:, None, :, :]
    d2 = diff.pow(2).sum(-1, keepdim=True)
    return diff, d2, torch.sqrt(d2 + _DIST_EPS)


class EGNNLayer(nn.Module):
    """One E(n)-equivariant message-passing layer on a dense, fully connected graph.

    m_ij = g_ij φ_e(h_i, h_j, ‖x_i − x_j‖², e_ij) with the soft attention gate g_ij = σ(Linear(φ_e)),
    x_i ← x_i + 1/(n−1) Σ_{j≠i} (x_i − x_j)/(‖x_i − x_j‖ + 1) φ_x(m_ij),
    h_i ← h_i + φ_h(h_i, 1/(n−1) Σ_{j≠i} m_ij).

    Parameters
    ----------
    hidden
        Width of node features and messages.
    n_edge_types
        Size of the one-hot edge features e_ij.
    update_nodes
        Whether to update h (the last layer only moves atoms, so it has no φ_h).
    """

    def __init__(self, hidden: int, n_edge_types: int = 2, update_nodes: bool = True):
        super().__init__()
        # φ_e's first linear map, split by blocks of its input [h_i, h_j, d²_ij, e_ij].
        self.edge_src = nn.Linear(hidden, hidden)
        self.edge_dst = nn.Linear(hidden, hidden, bias=False)
        self.edge_dist = nn.Linear(1, hidden, bias=False)
        self.edge_type = nn.Linear(n_edge_types, hidden, bias=False)
        self.edge_out = nn.Linear(hidden, hidden)
        self.gate = nn.Linear(hidden, 1)
        self.coord = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.coord[-1].weight)
        nn.init.zeros_(self.coord[-1].bias)
        self.node = (nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
                     if update_nodes else None)

    def messages(self, h: torch.Tensor, d2: torch.Tensor, edge_attr: torch.Tensor, offdiag: torch.Tensor
                 ) -> torch.Tensor:
        """Gated messages m_ij, zero on the diagonal.

        Parameters
        ----------
        h
            ``(B, n, H)`` node features.
        d2
            ``(B, n, n, 1)`` squared distances.
        edge_attr
            ``(n, n, E)`` one-hot edge types.
        offdiag
            ``(n, n, 1)`` mask, 0 on the diagonal and 1 elsewhere.

        Returns
        -------
        torch.Tensor
            ``(B, n, n, H)``.
        """
        static = self.edge_type(edge_attr)                                       # (n, n, H)
        pre = self.edge_src(h)[:, :, None, :] + self.edge_dst(h)[:, None, :, :]  # (B, n, n, H)
        pre = pre + (static + d2 * self.edge_dist.weight[:, 0])
        m = F.silu(self.edge_out(F.silu(pre)))
        return m * (torch.sigmoid(self.gate(m)) * offdiag)

    def forward(self, h: torch.Tensor, x: torch.Tensor, edge_attr: torch.Tensor, offdiag: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Update node features and coordinates.

        Parameters
        ----------
        h
            ``(B, n, H)`` node features.
        x
            ``(B, n, 3)`` coordinates.
        edge_attr
            ``(n, n, E)`` one-hot edge types.
        offdiag
            ``(n, n, 1)`` diagonal mask.

        Returns
        -------
        h, x
            Updated ``(B, n, H)`` features (unchanged if ``update_nodes`` is False) and ``(B, n, 3)``
            coordinates.
        """
        norm = 1.0 / (x.shape[1] - 1)
        diff, d2, dist = pairwise_geometry(x)
        m = self.messages(h, d2, edge_attr, offdiag)
        weight = self.coord(m) / (dist + 1.0)                 # (B, n, n, 1); diff vanishes on the diagonal
        x = x + norm * (diff * weight).sum(2)
        if self.node is not None:
            h = h + self.node(torch.cat([h, norm * m.sum(2)], dim=-1))
        return h, x


class EGNN(nn.Module):
    """E(3)-equivariant, time-conditioned network NN(c, x̃) for molecules: ``(B, n, 3)`` → ``(B, n, 3)``.

    Node features start as an embedding of the atom type plus an MLP of the sinusoidal embedding of
    ``c``; every edge of the fully connected graph carries a one-hot bonded/non-bonded flag and the
    squared distance. The output is the total displacement of the atoms by the ``n_layers`` EGNN
    layers: equivariant under rotations and reflections, invariant under translations, and exactly
    zero for a freshly built network (zero-initialised last layer of every φ_x).

    Parameters
    ----------
    atom_types
        Integer element class per atom (e.g. 0 = H, 1 = C, 2 = N, 3 = O); ``max + 1`` types are embedded.
    bonds
        Covalent bonds as atom index pairs (either order).
    hidden
        Width of node features and messages.
    n_layers
        Number of message-passing layers (≥ 1).
    time_dim
        Size of the sinusoidal embedding of ``c``.
    """

    def __init__(self, atom_types: Sequence[int], bonds: Sequence[tuple[int, int]], hidden: int = 64,
                 n_layers: int = 4, time_dim: int = 64):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1, got {n_layers}")
        types, bond_index = _check_topology(atom_types, bonds)
        n_atoms, n_types = types.numel(), int(types.max()) + 1
        self.n_atoms = n_atoms
        # Derived from the constructor arguments, so not part of the state dict.
        self.register_buffer("atom_types", types, persistent=False)
        self.register_buffer("bond_index", bond_index, persistent=False)
        self.register_buffer("atom_onehot", F.one_hot(types, n_types).float(), persistent=False)
        adjacency = bond_adjacency(n_atoms, bond_index)
        self.register_buffer("edge_attr", torch.stack([1.0 - adjacency, adjacency], dim=-1), persistent=False)
        self.register_buffer("offdiag", (1.0 - torch.eye(n_atoms))[..., None], persistent=False)

        self.atom_embedding = nn.Embedding(n_types, hidden)
        self.embed = SinusoidalEmbedding(time_dim)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.layers = nn.ModuleList(EGNNLayer(hidden, n_edge_types=2, update_nodes=i < n_layers - 1)
                                    for i in range(n_layers))

    def initial_features(self, c: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Node features h⁰_i = embed(type_i) + MLP(sinusoidal(c)).

        The atom embedding is a product with the fixed one-hot type matrix rather than a lookup, whose
        backward would be an order-dependent scatter-add.

        Parameters
        ----------
        c
            ``(B,)`` conditioning scalar.
        dtype
            Floating dtype of the features.

        Returns
        -------
        torch.Tensor
            ``(B, n, H)``.
        """
        atoms = self.atom_onehot.to(dtype) @ self.atom_embedding.weight     # (n, H)
        time = self.time_mlp(self.embed(c.to(dtype)))                        # (B, H)
        return atoms[None, :, :] + time[:, None, :]

    def forward(self, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Equivariant displacement field.

        Parameters
        ----------
        c
            ``(B,)`` conditioning scalar.
        x
            ``(B, n_atoms, 3)`` (scaled, centred) coordinates.

        Returns
        -------
        torch.Tensor
            ``(B, n_atoms, 3)``: x_L − x, with NN(c, x Rᵀ + b) = NN(c, x) Rᵀ.
        """
        if x.dim() != 3 or x.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"expected x of shape (B, {self.n_atoms}, 3), got {tuple(x.shape)}")
        edge_attr = self.edge_attr.to(x.dtype)
        offdiag = self.offdiag.to(x.dtype)
        h = self.initial_features(c, x.dtype)
        y = x
        for layer in self.layers:
            h, y = layer(h, y, edge_attr, offdiag)
        return y - x
