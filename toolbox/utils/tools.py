"""Small helpers shared by the whole toolbox (names as in dassl.utils)."""
import json
import os
import os.path as osp
import random
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from ..errors import UserError


def mkdir_if_missing(dirname):
    if dirname:
        os.makedirs(dirname, exist_ok=True)


def check_isfile(fpath):
    return osp.isfile(fpath)


def current_umask():
    """The process umask (os.umask can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(fpath, write_fn, mode="w"):
    """Write a file through a temp file in the same folder, then rename.

    Readers never see a half-written file, and a crash leaves the old file
    (or none) in place; the ``.tmp-*`` file such a crash leaves is removed by
    the next run in that folder. The file gets the permissions of an
    ordinary ``open()`` (0666 less the umask), not mkstemp's private 0600, so
    shared caches stay readable for the other users of a data folder.
    ``write_fn(fileobj)`` does the writing.
    """
    fpath = osp.abspath(fpath)
    mkdir_if_missing(osp.dirname(fpath))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + osp.basename(fpath) + "-",
                               dir=osp.dirname(fpath))
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, fpath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def remove_stale_temp_files(directory, min_age_s=3600):
    """Remove ``.tmp-*`` files older than ``min_age_s`` from ``directory``
    (shared cache folders, where a younger one may be another process's
    write in progress)."""
    try:
        names = [n for n in os.listdir(directory) if n.startswith(".tmp-")]
    except OSError:
        return
    now = time.time()
    for name in names:
        path = osp.join(directory, name)
        try:
            if now - os.path.getmtime(path) > min_age_s:
                os.remove(path)
        except OSError:
            pass


def read_json(fpath):
    with open(fpath, "r") as f:
        return json.load(f)


def write_json(obj, fpath, indent=4):
    """Write JSON atomically (temp file + rename); ``indent=None`` for big files."""
    seps = (",", ": ") if indent is not None else (",", ":")
    atomic_write(fpath, lambda f: json.dump(obj, f, indent=indent, separators=seps))


def listdir_nohidden(path, sort=False):
    items = [f for f in os.listdir(path) if not f.startswith(".")]
    if sort:
        items.sort()
    return items


def read_image(path):
    """Read an image as RGB; an unreadable file is a UserError naming it."""
    if not osp.exists(path):
        raise UserError(f"image file not found: {path} (check DATASET.ROOT and the dataset's split file)")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as e:  # PIL raises several types for broken files
        raise UserError(
            f"cannot read image {path} ({type(e).__name__}: {e}); "
            "re-download the file or delete it and its split cache"
        ) from None


def set_random_seed(seed):
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def get_rng_state():
    """RNG states as plain python/tensor objects (loadable with weights_only)."""
    import torch

    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    import torch

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def collect_env_info():
    import torch

    import platform

    import torchvision
    lines = [
        f"Python: {sys.version.split()[0]} ({platform.platform()})",
        f"PyTorch: {torch.__version__}",
        f"torchvision: {torchvision.__version__}",
        f"CUDA available: {torch.cuda.is_available()}",
    ]
    if torch.cuda.is_available():
        lines.append(f"GPU: {torch.cuda.get_device_name(0)}")
    lines.append(f"CPU threads: {torch.get_num_threads()}")
    return "\n".join(lines)
