"""Per-atom derivative container shared by every term and parameterization."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Atomic fields a term can depend on, with the trailing shape of each array.
#: xyz in Å (N, 3); b_iso in Å² (N,); u_aniso in Å² (N, 6) ordered
#: U11 U22 U33 U12 U13 U23 (orthogonal frame); occ dimensionless (N,).
FIELD_SHAPES: dict[str, tuple[int, ...]] = {
    "xyz": (3,),
    "b_iso": (),
    "u_aniso": (6,),
    "occ": (),
}


@dataclass
class AtomGradient:
    """Derivatives of a scalar with respect to atomic arrays.

    A field left as ``None`` means "identically zero" (the term does not
    depend on it).  Units follow the field: dT/dxyz per Å, dT/dB per Å², ...
    The same container carries a diagonal curvature (d²T/dx²) when a term
    provides one.
    """

    n_atoms: int
    xyz: np.ndarray | None = None
    b_iso: np.ndarray | None = None
    u_aniso: np.ndarray | None = None
    occ: np.ndarray | None = None

    @classmethod
    def zeros(cls, n_atoms: int, fields: tuple[str, ...] | list[str] = ("xyz",)) -> "AtomGradient":
        """A gradient with the named fields allocated as zeros."""
        g = cls(n_atoms)
        for name in fields:
            setattr(g, name, np.zeros((n_atoms, *FIELD_SHAPES[name])))
        return g

    def get(self, name: str) -> np.ndarray:
        """The named field, or a fresh zero array when it is ``None``."""
        value = getattr(self, name)
        if value is None:
            return np.zeros((self.n_atoms, *FIELD_SHAPES[name]))
        return value

    def present(self) -> list[str]:
        """Names of the fields that are not ``None``."""
        return [name for name in FIELD_SHAPES if getattr(self, name) is not None]

    def add(self, other: "AtomGradient", scale: float = 1.0) -> "AtomGradient":
        """In place: ``self += scale * other``; returns self."""
        if other.n_atoms != self.n_atoms:
            raise ValueError(f"gradient sizes differ: {self.n_atoms} vs {other.n_atoms}")
        for name in other.present():
            mine = getattr(self, name)
            theirs = getattr(other, name)
            if mine is None:
                setattr(self, name, scale * theirs)
            else:
                mine += scale * theirs
        return self

    def scaled(self, scale: float) -> "AtomGradient":
        """A new gradient equal to ``scale * self``."""
        out = AtomGradient(self.n_atoms)
        return out.add(self, scale)
