"""Frozen image features cached on disk (see cache.py)."""
from .cache import FeatureCache, effective_precision, resolve_dir, user_cache_dir  # noqa: F401
from .identity import backbone_identity  # noqa: F401
from .store import DamagedStore, read_header, read_store  # noqa: F401
