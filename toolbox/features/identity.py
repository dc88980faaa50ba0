"""A backbone's identity for the feature cache: its name plus a content hash
of its weights, so features of different weights never mix even under the
same name (a fine-tuned file passed as MODEL.BACKBONE.PATH, a re-download).

A weights file is hashed once and the hash remembered by (path, size, mtime)
in ``weights_hashes.json`` of the cache folder; a model with no file (the
generated tiny models, a model built in memory) hashes its state dict.
"""
import hashlib
import json
import os
import os.path as osp

from .store import atomic_write_bytes

MEMO_FILE = "weights_hashes.json"


def file_sha256(path, memo_dir=None):
    """SHA-256 of ``path``, remembered in ``memo_dir``/weights_hashes.json."""
    path = osp.realpath(path)
    st = os.stat(path)
    stamp = [st.st_size, st.st_mtime_ns]
    memo_path = osp.join(memo_dir, MEMO_FILE) if memo_dir else None
    memo = {}
    if memo_path and osp.isfile(memo_path):
        try:
            with open(memo_path) as f:
                memo = json.load(f)
        except (OSError, ValueError):
            memo = {}
        if not isinstance(memo, dict):  # damaged (e.g. a list): rebuilt like a missing one
            memo = {}
    hit = memo.get(path)
    if isinstance(hit, dict) and hit.get("stamp") == stamp and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    if memo_path:
        memo[path] = {"stamp": stamp, "sha256": digest}
        try:  # a memo that cannot be written only costs a re-hash next time
            atomic_write_bytes(memo_path, [json.dumps(memo, indent=1).encode()])
        except OSError:
            pass
    return digest


def state_dict_sha256(model):
    """SHA-256 over a model's parameter and buffer names, dtypes, shapes and values."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def backbone_identity(name, weights_file, model, memo_dir=None):
    """{"name", "weights_sha256", "weights_file"}: the file's hash when the
    weights came from ``weights_file``, else the hash of ``model``'s state."""
    if weights_file and osp.isfile(weights_file):
        return {"name": name, "weights_sha256": file_sha256(weights_file, memo_dir),
                "weights_file": osp.realpath(weights_file)}
    return {"name": name, "weights_sha256": state_dict_sha256(model), "weights_file": None}
