"""Atomic diagonal curvature of reciprocal-space targets (Fisher information, random phases).

Shared by every structure-factor target (``FTarget.evaluate`` with
``want_curv``): a target states the expected ∂²T/∂A² per reflection and
this maps it to each atom's xyz and B.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..gradient import AtomGradient
from ..model import AtomModel

if TYPE_CHECKING:
    from ..components import ScatteringTable


def atom_fisher_diagonal(model: AtomModel, table: ScatteringTable, d: np.ndarray,
                         info: np.ndarray, n_bins: int = 40) -> AtomGradient:
    """Diagonal Gauss–Newton curvature of a reciprocal-space target for each atom's xyz and B.

    ``info`` (per reflection, d-spacings ``d`` Å) is the expected ∂²T/∂A² of
    the F_calc components.  With the atoms' contributions taken as having
    independent phases (the diagonal of the Fisher information, as in
    REFMAC's approximate second derivatives: Murshudov, Vagin & Dodson 1997,
    Acta Cryst. D53, 240), atom j with occupancy q, form factor f(s) and B contributes
    |∂F/∂x_a|² = n_ops (2π)² s²/3 · g² and |∂F/∂B|² = n_ops (s²/4)² · g²,
    g = q f(s) exp(−B s²/4), to reflection h (n_ops symmetry copies, h_a²
    averaged over directions: s²/3), so

        ∂²T/∂x_a² ≈ Σ_h info_h n_ops (4π²/3) s² g²,
        ∂²T/∂B²   ≈ Σ_h info_h n_ops (s²/4)² g².

    The sums run over ``n_bins`` shells of equal reflection count (info-weighted
    mean s² per shell).  Anisotropic atoms use B = 8π²·mean(U_ii).  Units:
    per Å² for xyz, per Å⁴ for B.
    """
    s2 = 1.0 / np.asarray(d, float) ** 2
    info = np.nan_to_num(np.asarray(info, float))
    order = np.argsort(s2)
    shells = [sh for sh in np.array_split(order, min(n_bins, max(len(order), 1))) if len(sh)]
    weight = np.array([info[sh].sum() for sh in shells])
    centre = np.array([np.dot(info[sh], s2[sh]) / w if w > 0 else s2[sh].mean()
                       for sh, w in zip(shells, weight)])
    b = np.where(model.has_aniso, 8 * np.pi ** 2 * model.u_aniso[:, :3].mean(axis=1), model.b_iso)
    _, kind = np.unique(np.char.add(np.asarray(model.element, str),
                                    np.asarray(model.charge).astype(str)), return_inverse=True)
    first = np.unique(kind, return_index=True)[1]  # one atom of each element and charge
    f = table.coefficients(model.element[first], model.charge[first]).evaluate(centre)[kind]
    g2 = (model.occ[:, None] * f) ** 2 * np.exp(-np.outer(b, centre) / 2.0)
    n_ops = len(model.spacegroup.operations())
    cx = n_ops * (4 * np.pi ** 2 / 3) * g2 @ (weight * centre)
    cb = n_ops * g2 @ (weight * (centre / 4.0) ** 2)
    return AtomGradient(model.n_atoms, xyz=np.repeat(cx[:, None], 3, axis=1), b_iso=cb)


__all__ = ["atom_fisher_diagonal"]
