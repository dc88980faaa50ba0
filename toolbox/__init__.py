"""Dassl-compatible core: module paths mirror ``dassl.*``.

A trainer or dataset written for upstream Dassl runs here after renaming
``dassl`` to ``toolbox`` in its imports.
"""
__version__ = "0.1.0"
