"""Regenerate the embedded demo example (core/data/example/) from ../shared/data/5e5z.

The demo starts from PDB 5E5Z (LVHSSN peptide, P2₁, 1.66 Å) moved as a rigid
body (3° about the centre, 0.4 Å along a, perpendicular to the polar b axis)
with 0.15 Å rms random shifts on top and every B set to 15 Å², so the demo
shows a refinement recovering the deposited model.

    python examples/make_demo_example.py ../shared/data/5e5z core/data/example
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import gemmi
import numpy as np


def main(src: str, dst: str) -> None:
    src_dir, dst_dir = Path(src), Path(dst)
    st = gemmi.read_structure(str(src_dir / "5e5z.pdb"))
    st.remove_hydrogens()
    rng = np.random.default_rng(5)
    xyz = np.array([a.pos.tolist() for ch in st[0] for r in ch for a in r])
    centre = xyz.mean(axis=0)
    angle = np.radians(3.0)
    rot = gemmi.Mat33([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    shift = np.array([0.4, 0.0, 0.0])
    for ch in st[0]:
        for res in ch:
            for atom in res:
                p = np.array(atom.pos.tolist()) - centre
                p = np.array(rot.multiply(gemmi.Vec3(*p)).tolist()) + centre + shift
                p += rng.normal(scale=0.15 / np.sqrt(3), size=3)
                atom.pos = gemmi.Position(*p)
                atom.b_iso = 15.0
    dst_dir.mkdir(parents=True, exist_ok=True)
    st.write_pdb(str(dst_dir / "5e5z_shifted.pdb"))
    shutil.copy(src_dir / "5e5z.mtz", dst_dir / "5e5z.mtz")
    shutil.copy(src_dir / "5e5z.pdb", dst_dir / "5e5z_deposited.pdb")


if __name__ == "__main__":
    main(*sys.argv[1:3])
