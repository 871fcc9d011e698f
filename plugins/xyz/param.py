"""Cartesian coordinates of selected atoms as free parameters (Å)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refinekit.plugin_api import AtomGradient, AtomModel, Parameterization, ReflectionData
from refinekit.plugin_api.numerics.origin import fix_centroid, floating_directions, project_gradient


@dataclass
class XyzOptions:
    """selection: gemmi selection of the atoms to move ('' = all).

    fix_origin: when every atom moves against reflection data in a polar
    space group, keep the centroid fixed along the floating-origin
    directions (otherwise the model can drift along the polar axis).
    """

    selection: str = ""
    fix_origin: bool = True


class XyzParameters(Parameterization):
    """p = (x₁, y₁, z₁, x₂, ...) in Å for the selected atoms.

    The map is the identity, except that in a polar space group (when all
    atoms move against reflection data) the centroid is held along the
    floating-origin directions: x = p − ((p̄ − c̄₀)·u)u for each such
    direction u — a linear constraint with the exact pull-back
    g − (ḡ·u)u.
    """

    name = "xyz"
    fields = ("xyz",)
    Options = XyzOptions

    def setup(self, context) -> None:
        model = context.model
        self.indices = model.select(self.options.selection)
        self.directions = np.zeros((0, 3))
        whole = len(self.indices) == model.n_atoms
        if self.options.fix_origin and whole and isinstance(getattr(context, "data", None), ReflectionData):
            self.directions = floating_directions(model.cell, model.spacegroup)
        self.centroid = model.xyz[self.indices].mean(axis=0)

    def initial(self, model: AtomModel) -> np.ndarray:
        return model.xyz[self.indices].ravel().copy()

    def apply(self, p: np.ndarray, model: AtomModel) -> None:
        model.xyz[self.indices] = fix_centroid(p.reshape(-1, 3), self.centroid, self.directions)

    def pullback(self, grad: AtomGradient, model: AtomModel) -> np.ndarray:
        return project_gradient(grad.get("xyz")[self.indices], self.directions).ravel()
