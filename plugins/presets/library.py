"""Preset configs (TOML-shaped dicts) merged under a user's config."""

from __future__ import annotations

_COMMON = {
    "fcalc": {"engine": "fft", "table": "auto"},
    "optimizer": {"name": "lbfgs"},
    "terms": {"ls": {"weight": 1.0}},
    "parameters": {"xyz": {}, "b-iso": {}},
    "reporters": ["log"],
}

#: Reciprocal-space LS refinement: each cycle minimises xyz, then B.
DEFAULT = {
    **_COMMON,
    "description": "LS amplitude target; each macro-cycle refines xyz then isotropic B",
    "stages": [{"name": "xyzb", "cycles": 5, "steps": [
        {"step": "minimize", "parameters": ["xyz"], "max_iter": 30},
        {"step": "minimize", "parameters": ["b-iso"], "max_iter": 20}]}],
}

#: Rigid body first (3.0–6.0 Å, wide convergence radius), then xyz + B at all resolutions.
RIGID_THEN_XYZB = {
    **_COMMON,
    "description": "rigid body at 6–3 Å, then xyz and B against all data",
    "parameters": {"rigid-body": {}, "xyz": {}, "b-iso": {}},
    "stages": [
        {"name": "rigid", "cycles": 3, "d_min": 3.0, "d_max": 6.0, "steps": [
            {"step": "minimize", "parameters": ["rigid-body"], "max_iter": 40}]},
        {"name": "xyzb", "cycles": 3, "steps": [
            {"step": "minimize", "parameters": ["xyz"], "max_iter": 25},
            {"step": "minimize", "parameters": ["b-iso"], "max_iter": 15}]},
    ],
}


#: Likelihood refinement as REFMAC/servalcat do it: after an initial scale,
#: each macro-cycle puts the riding hydrogens back, sets the data weight,
#: refines xyz and B together against ML + geometry + ADP similarity (5
#: L-BFGS iterations, the two blocks put on one curvature scale by the
#: kernel: the Fisher diagonal of the ML target and the restraints'
#: curvatures), then rescales (bulk solvent + anisotropic, one round,
#: warm-started), so the statistics of every cycle are those of a scaled
#: F_model, as servalcat reports them.
#: One joint minimisation replaces the former xyz (6 iterations) then B (4)
#: steps: 71 instead of 148 F_calc + gradient passes over 10 cycles on 1l2h,
#: and each block gets 5 iterations per cycle instead of 6 and 4 (6 joint
#: iterations: 81 passes; 1l2h R-free 0.2746 instead of 0.2736, from p05
#: 0.2709 and 0.175 Å instead of 0.2727 and 0.181 Å).
#: ADP similarity is the symmetrised Kullback–Leibler form (REFMAC's and
#: servalcat's, σ 0.10 for 1-2 and 0.15 for 1-3 pairs) without pairs of the
#: riding hydrogens, whose B follow their parent's: with the absolute form
#: (σ 1.5/2.0 Å²) and those pairs, which repeat each heavy-atom pair through
#: its hydrogens, the B of 1l2h were smoothed to an r.m.s. ΔB of 1.7 Å²
#: (servalcat's result: 3.2 Å²) and 10 cycles from the deposited model ended
#: at R-work/R-free 0.2518/0.2788; with this form and pairs, 0.2477/0.2736
#: (servalcat's model under the same scaler: 0.2435/0.2764), and from
#: 1l2h_p05 / _p03 R-free 0.2727 / 0.2785 at 0.181 / 0.115 Å from the
#: deposited model (before: 0.2746 / 0.185 Å from p05).
#: The auto weight starts from the gradient ratio and keeps bond rmsd in
#: 0.007–0.0105 Å (≈0.009 Å keeps angle rmsd < 2° on 1l2h; 0.0126 Å gave
#: 2.19°); angle rmsd above 2° lowers the weight too.  Atoms with anisotropic U (e.g.
#: TLS-derived, 3nr7) keep it fixed instead of being isotropized: on 3nr7 that
#: isotropization alone costs 0.013 in R-free (0.3105 → 0.3237), which 10 cycles
#: of isotropic refinement did not win back (0.3295).
#: Hydrogens are (re)generated at ideal positions (``hydrogens`` preparer)
#: and put back on their parents every cycle (``place-hydrogens``), their B
#: riding on the parent's: on 1l2h the scaled deposited model goes from
#: R-free 0.2787 to 0.2743.  The table is chosen from the model file's
#: experiment method (neutron, electron, X-ray).
XRAY = {
    "description": "ML amplitude target with geometry and ADP restraints; weight, xyz + B, scale each cycle",
    "data": {"prepare": ["french-wilson"]},
    "model": {"prepare": ["hydrogens"]},
    "fcalc": {"engine": "fft", "table": "auto"},
    "optimizer": {"name": "lbfgs"},
    "weights": {"name": "auto", "options": {"bond_rmsd_min": 0.007, "bond_rmsd_max": 0.0105,
                                            "angle_rmsd_max": 2.0}},
    "terms": {"ml": {"component": "ml-amplitude", "weight": 1.0},
              "geometry": {"weight": 1.0},
              "adp": {"component": "adp-similarity", "weight": 1.0,
                      "options": {"form": "kl", "hydrogens": False}}},
    "parameters": {"xyz": {}, "b-iso": {"options": {"isotropize": False}}},
    "scalers": {"bulk-solvent": {}, "aniso-scale": {}},
    "reporters": ["progress"],
    "initial_steps": [{"step": "scale", "scalers": ["bulk-solvent", "aniso-scale"], "rounds": 2}],
    "stages": [{"name": "xray", "cycles": 10, "steps": [
        {"step": "place-hydrogens"},
        {"step": "minimize", "parameters": ["xyz", "b-iso"], "terms": ["ml", "geometry", "adp"],
         "max_iter": 5},
        {"step": "scale", "scalers": ["bulk-solvent", "aniso-scale"], "rounds": 1}]}],
}


#: Real-space refinement against a cryo-EM map (phenix.real_space_refine-like,
#: Afonine et al. 2018, Acta Cryst. D74, 531): each macro-cycle refines xyz
#: against the map-value target with geometry restraints (data weight from the
#: segment search), then isotropic B against −CC_mask (``map-cc``: the model
#: map at the map's resolution, whose B gradients come through the Fcalc
#: engine's adjoint) with ADP similarity (data weight from the gradient
#: balance); CC_mask/CC_box (electron form factors) after every cycle
#: (``refinekit rsr`` adds them for the start and the end).  A final
#: ``polish`` cycle refines xyz against ``map-cc`` with a fitted overall B
#: (term ``cc-xyz``; data weight by curvature matching to map-value's
#: searched one): map-value is biased where atom images overlap (simulated
#: 1 Å map of 1l2h: the exact model settles 0.035 Å away, 0.002 Å after the
#: polish; docs/benchmarks.md), map-cc is not.  A B step after the polish
#: added nothing on 6i5a (CC_mask 0.8136 with it, 0.8139 without, at 3 Å) and
#: cost 3–5 s, so there is none.  Atoms with anisotropic U keep it fixed.
#: Hydrogens are restrained at nucleus distances (electron scattering is
#: dominated by the nuclear charge; models for cryo-EM carry nucleus positions).
CRYO_EM = {
    "description": "map-value + geometry for xyz, map-cc + ADP similarity for B, then a map-cc xyz polish; "
                   "CC_mask each cycle",
    "fcalc": {"engine": "fft", "table": "electron"},
    "optimizer": {"name": "lbfgs"},
    "weights": {"name": "rsr-search", "options": {"match": {"cc-xyz": "map"}}},
    "terms": {"map": {"component": "map-value", "weight": 1.0},
              "geometry": {"weight": 1.0, "options": {"hydrogen_distances": "nucleus"}},
              "cc": {"component": "map-cc", "weight": 1.0},
              "cc-xyz": {"component": "map-cc", "weight": 1.0, "options": {"overall_b": "fit"}},
              "adp": {"component": "adp-similarity", "weight": 1.0}},
    "parameters": {"xyz": {}, "b-iso": {"options": {"isotropize": False}}},
    "reporters": ["progress"],
    "output": {"mtz": False},
    "stages": [{"name": "rsr", "cycles": 5, "steps": [
        {"step": "minimize", "parameters": ["xyz"], "terms": ["map", "geometry"], "max_iter": 50},
        {"step": "minimize", "parameters": ["b-iso"], "terms": ["cc", "adp"], "max_iter": 30},
        {"step": "rs-metrics", "per_chain": False, "per_residue": False}]},
               {"name": "polish", "cycles": 1, "steps": [
        {"step": "minimize", "parameters": ["xyz"], "terms": ["cc-xyz", "geometry"], "max_iter": 50},
        {"step": "rs-metrics", "per_chain": False, "per_residue": False}]}],
}
