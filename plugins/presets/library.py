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


#: Likelihood refinement as REFMAC/servalcat do it: each macro-cycle scales
#: (bulk solvent + anisotropic), sets the data weight, refines xyz against
#: ML + geometry, then B against ML + B similarity.  The auto weight starts
#: from the gradient ratio and keeps bond rmsd in 0.007–0.0105 Å (≈0.009 Å
#: keeps angle rmsd < 2° on 1l2h; 0.0126 Å gave 2.19°); the B step's ML weight
#: gets the same factor (adp_scale = 1), so ADP similarity stays a mild restraint;
#: angle rmsd above 2° lowers the weight too.  Atoms with anisotropic U (e.g.
#: TLS-derived, 3nr7) keep it fixed instead of being isotropized: on 3nr7 that
#: isotropization alone costs 0.013 in R-free (0.3105 → 0.3237), which 10 cycles
#: of isotropic refinement did not win back (0.3295).
XRAY = {
    "description": "ML amplitude target with geometry restraints; scale, weight, xyz, B each cycle",
    "data": {"prepare": ["french-wilson"]},
    "fcalc": {"engine": "fft", "table": "xray"},
    "optimizer": {"name": "lbfgs"},
    "weights": {"name": "auto", "options": {"bond_rmsd_min": 0.007, "bond_rmsd_max": 0.0105,
                                            "angle_rmsd_max": 2.0}},
    "terms": {"ml": {"component": "ml-amplitude", "weight": 1.0},
              "geometry": {"weight": 1.0},
              "adp": {"component": "adp-similarity", "weight": 1.0}},
    "parameters": {"xyz": {}, "b-iso": {"options": {"isotropize": False}}},
    "scalers": {"bulk-solvent": {}, "aniso-scale": {}},
    "reporters": ["progress"],
    "initial_steps": [{"step": "scale", "scalers": ["bulk-solvent", "aniso-scale"], "rounds": 2}],
    "stages": [{"name": "xray", "cycles": 10, "steps": [
        {"step": "scale", "scalers": ["bulk-solvent", "aniso-scale"], "rounds": 2},
        {"step": "minimize", "parameters": ["xyz"], "terms": ["ml", "geometry"], "max_iter": 15},
        {"step": "minimize", "parameters": ["b-iso"], "terms": ["ml", "adp"], "max_iter": 10}]}],
}


#: Real-space refinement against a cryo-EM map (phenix.real_space_refine-like,
#: Afonine et al. 2018, Acta Cryst. D74, 531): the map-value target with
#: geometry restraints, the data weight from the segment search, xyz only;
#: CC_mask/CC_box (electron form factors) after every cycle (``refinekit rsr``
#: adds them for the start and the end).
#: Hydrogens are restrained at nucleus distances (electron scattering is
#: dominated by the nuclear charge; models for cryo-EM carry nucleus positions).
CRYO_EM = {
    "description": "map-value + geometry, weight from segment trials, xyz; CC_mask each cycle",
    "fcalc": {"engine": "fft", "table": "electron"},
    "optimizer": {"name": "lbfgs"},
    "weights": {"name": "rsr-search"},
    "terms": {"map": {"component": "map-value", "weight": 1.0},
              "geometry": {"weight": 1.0, "options": {"hydrogen_distances": "nucleus"}}},
    "parameters": {"xyz": {}},
    "reporters": ["progress"],
    "output": {"mtz": False},
    "stages": [{"name": "rsr", "cycles": 5, "steps": [
        {"step": "minimize", "parameters": ["xyz"], "terms": ["map", "geometry"], "max_iter": 50},
        {"step": "rs-metrics", "per_chain": False, "per_residue": False}]}],
}
