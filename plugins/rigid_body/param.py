"""Rigid-body parameterization: six parameters per group.

For group g with reference coordinates x⁰ (taken at setup) and centre
c = mean(x⁰), parameters p_g = (α, β, γ, t_x, t_y, t_z) give

    x = R(α, β, γ)(x⁰ − c) + c + t,   R = R_z(γ) R_y(β) R_x(α)

(angles in radians about the Cartesian axes through c; t in Å).  Starting
from p = 0 at every setup keeps the angles small, far from gimbal lock.
The pull-back is exact: ∂T/∂t = Σ_i g_i and ∂T/∂α = Σ_i g_i·(∂R/∂α)(x⁰_i − c),
etc., with g_i = ∂T/∂x_i.  A constrained map of this kind is what the
parameterization contract is for (cf. Sussman et al. 1977, CORELS).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refinekit.plugin_api import AtomGradient, AtomModel, ConfigError, Parameterization, ReflectionData
from refinekit.plugin_api.numerics.origin import fix_centroid, floating_directions, project_gradient


def _rx(a: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(a), np.sin(a)
    return (np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            np.array([[0, 0, 0], [0, -s, -c], [0, c, -s]]))


def _ry(b: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(b), np.sin(b)
    return (np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            np.array([[-s, 0, c], [0, 0, 0], [-c, 0, -s]]))


def _rz(g: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(g), np.sin(g)
    return (np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
            np.array([[-s, -c, 0], [c, -s, 0], [0, 0, 0]]))


def rotation(angles: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """R = R_z(γ) R_y(β) R_x(α) and its derivatives [∂R/∂α, ∂R/∂β, ∂R/∂γ]."""
    (rx, drx), (ry, dry), (rz, drz) = _rx(angles[0]), _ry(angles[1]), _rz(angles[2])
    return rz @ ry @ rx, [rz @ ry @ drx, rz @ dry @ rx, drz @ ry @ rx]


@dataclass
class RigidBodyOptions:
    """groups: gemmi selections, one per rigid group; empty = one group per chain.

    fix_origin: when the groups cover every atom and the data are
    reflections in a polar space group, hold the overall centroid along the
    floating-origin directions (the data cannot fix it).
    """

    groups: list[str] = field(default_factory=list)
    fix_origin: bool = True


class RigidBody(Parameterization):
    """Rotation (radians) about each group's centre plus translation (Å)."""

    name = "rigid-body"
    fields = ("xyz",)
    Options = RigidBodyOptions

    def setup(self, context) -> None:
        model = context.model
        if self.options.groups:
            groups = [model.select(expr) for expr in self.options.groups]
        else:
            chain_of_atom = model.atom_ref[:, 0]
            groups = [np.flatnonzero(chain_of_atom == c) for c in np.unique(chain_of_atom)]
        for expr, g in zip(self.options.groups or [""] * len(groups), groups):
            if len(g) == 0:
                raise ConfigError(f"rigid-body group {expr!r} selects no atoms", "parameters")
        all_idx = np.concatenate(groups)
        if len(np.unique(all_idx)) != len(all_idx):
            raise ConfigError("rigid-body groups overlap", "parameters")
        self.groups = groups
        self.indices = all_idx
        self.reference = [model.xyz[g].copy() for g in groups]
        self.centres = [r.mean(axis=0) for r in self.reference]
        self._angles = np.zeros((len(groups), 3))
        self.directions = np.zeros((0, 3))
        if (self.options.fix_origin and len(all_idx) == model.n_atoms
                and isinstance(getattr(context, "data", None), ReflectionData)):
            self.directions = floating_directions(model.cell, model.spacegroup)
        self.centroid = model.xyz[all_idx].mean(axis=0)

    def initial(self, model: AtomModel) -> np.ndarray:
        return np.zeros(6 * len(self.groups))

    def apply(self, p: np.ndarray, model: AtomModel) -> None:
        self._angles = p.reshape(-1, 6)[:, :3].copy()
        for k, (g, ref, c) in enumerate(zip(self.groups, self.reference, self.centres)):
            r, _ = rotation(p[6 * k:6 * k + 3])
            model.xyz[g] = (ref - c) @ r.T + c + p[6 * k + 3:6 * k + 6]
        if len(self.directions):
            idx = self.indices
            model.xyz[idx] = fix_centroid(model.xyz[idx], self.centroid, self.directions)

    def pullback(self, grad: AtomGradient, model: AtomModel) -> np.ndarray:
        g_xyz = grad.get("xyz")
        if len(self.directions):
            g_xyz = g_xyz.copy()
            g_xyz[self.indices] = project_gradient(g_xyz[self.indices], self.directions)
        out = np.empty(6 * len(self.groups))
        for k, (g, ref, c) in enumerate(zip(self.groups, self.reference, self.centres)):
            _, derivs = rotation(self._angles[k])
            gi = g_xyz[g]
            local = ref - c
            for a, dr in enumerate(derivs):
                out[6 * k + a] = np.sum(gi * (local @ dr.T))
            out[6 * k + 3:6 * k + 6] = gi.sum(axis=0)
        return out
