"""Shared numerics for plugins (one place, never copied between plugins).

Modules here depend only on numpy/scipy/numba/gemmi and the contract.
"""
