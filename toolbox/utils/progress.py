"""Progress bars for the long silent loops (evaluation, feature extraction,
tiny pre-training). They go to stderr, so log.txt (stdout) stays clean; set
TQDM_DISABLE=1 to turn them off (tqdm reads TQDM_* environment variables)."""
import sys

from tqdm import tqdm


def progress(iterable, desc, total=None, unit="batch", **kwargs):
    """A tqdm bar over ``iterable`` that disappears when done."""
    if total is None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    if not kwargs.get("disable", True):
        # an explicit disable=False would override TQDM_DISABLE=1 (tqdm reads the
        # environment as default arguments)
        del kwargs["disable"]
    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, **kwargs)
