"""First-party plugins; each sub-package is one entry point of ``refinekit.plugins``."""
