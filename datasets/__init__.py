"""Dataset adapters and multi-task suites. Importing this package registers them."""
from . import demo  # noqa: F401
