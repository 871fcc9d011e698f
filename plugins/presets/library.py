"""Preset configs (TOML-shaped dicts) merged under a user's config."""

from __future__ import annotations

_COMMON = {
    "fcalc": {"engine": "fft", "table": "xray"},
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
#: ML + geometry, then B against ML + B similarity.
XRAY = {
    "description": "ML amplitude target with geometry restraints; scale, weight, xyz, B each cycle",
    "data": {"prepare": ["french-wilson"]},
    "fcalc": {"engine": "fft", "table": "xray"},
    "optimizer": {"name": "lbfgs"},
    "weights": {"name": "auto"},
    "terms": {"ml": {"component": "ml-amplitude", "weight": 1.0},
              "geometry": {"weight": 1.0},
              "adp": {"component": "adp-similarity", "weight": 1.0}},
    "parameters": {"xyz": {}, "b-iso": {}},
    "scalers": {"bulk-solvent": {}, "aniso-scale": {}},
    "reporters": ["progress"],
    "initial_steps": [{"step": "scale", "scalers": ["bulk-solvent", "aniso-scale"], "rounds": 2}],
    "stages": [{"name": "xray", "cycles": 10, "steps": [
        {"step": "scale", "scalers": ["bulk-solvent", "aniso-scale"], "rounds": 2},
        {"step": "minimize", "parameters": ["xyz"], "terms": ["ml", "geometry"], "max_iter": 15},
        {"step": "minimize", "parameters": ["b-iso"], "terms": ["ml", "adp"], "max_iter": 10}]}],
}
