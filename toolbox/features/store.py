"""The on-disk format of one feature store: the features of one (backbone,
task, split, evaluation transform, precision, device kind), one row per image.

A file is ``MAGIC``, an 8-byte little-endian header length, a JSON header and
the float32 payload (rows x dim). The header names every row's image (path,
size, mtime in ns) and holds the payload's length and SHA-256, and a SHA-256 of
the header itself (so rows whose paths were moved are caught too), so a
truncated or altered file is detected on reading (``DamagedStore``) instead of
giving a wrong feature. Files are written through a temp file in the same folder and
renamed into place, with the mode the user's umask gives a new file.
"""
import hashlib
import json
import os
import os.path as osp
import struct
import tempfile

import numpy as np

MAGIC = b"FEATSTR1"
SUFFIX = ".feat"
TMP_PREFIX = ".tmp-"
VERSION = 2  # 2: the header carries its own checksum (HEADER_SUM)
HEADER_SUM = "header_sha256"


class DamagedStore(Exception):
    """A store file that cannot be trusted (truncated, altered, not a store)."""


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode():
    """The mode ``open(path, "w")`` would give a new file (0666 minus the umask)."""
    return 0o666 & ~_umask()


def atomic_write_bytes(path, chunks):
    """Write ``chunks`` (bytes-like) to ``path`` via a temp file + rename.

    Any error (a full disk included) removes the temp file and re-raises: the
    old file, or none, stays in place; never a partial one.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + osp.basename(path) + "-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; a lab shares these files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def write_store(path, header, entries, feats):
    """Atomically write ``feats`` (n, dim) float32 with ``entries`` [(path,
    size, mtime_ns)] (one per row) and the descriptive ``header`` dict."""
    feats = np.ascontiguousarray(feats, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[0] != len(entries):
        raise ValueError(f"{feats.shape} features for {len(entries)} images")
    payload = memoryview(feats).cast("B")
    head = dict(header, version=VERSION, n=int(feats.shape[0]), dim=int(feats.shape[1]),
                dtype="float32", payload_bytes=payload.nbytes,
                payload_sha256=hashlib.sha256(payload).hexdigest(),
                entries=[list(e) for e in entries])
    head[HEADER_SUM] = header_sha256(head)
    blob = json.dumps(head, separators=(",", ":")).encode()
    atomic_write_bytes(path, [MAGIC, struct.pack("<Q", len(blob)), blob, payload])


def header_sha256(head):
    """SHA-256 of a header's fields (all but the checksum itself), in a canonical form."""
    fields = {k: v for k, v in head.items() if k != HEADER_SUM}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def read_header(path):
    """The header dict of a store (without reading the payload)."""
    with open(path, "rb") as f:
        return _read_header(f, osp.getsize(path))[0]


def _read_header(f, size):
    start = f.read(len(MAGIC) + 8)
    if len(start) < len(MAGIC) + 8 or start[:len(MAGIC)] != MAGIC:
        raise DamagedStore("not a feature store (bad magic or truncated)")
    (n_head,) = struct.unpack("<Q", start[len(MAGIC):])
    if n_head > size:
        raise DamagedStore("header length beyond the end of the file")
    try:
        head = json.loads(f.read(n_head).decode())
        expected = len(MAGIC) + 8 + n_head + int(head["payload_bytes"])
        if head["payload_bytes"] != head["n"] * head["dim"] * 4 or len(head["entries"]) != head["n"]:
            raise ValueError("inconsistent header")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise DamagedStore(f"unreadable header ({type(e).__name__})") from None
    if HEADER_SUM not in head:
        raise DamagedStore("written by an older version, without a header checksum")
    if head[HEADER_SUM] != header_sha256(head):
        raise DamagedStore("header checksum mismatch (its image rows or keys were edited)")
    if size != expected:
        raise DamagedStore(f"size {size} bytes, the header says {expected}")
    return head, len(MAGIC) + 8 + n_head


def read_store(path):
    """(header, features (n, dim) float32 array); raises DamagedStore."""
    size = osp.getsize(path)
    with open(path, "rb") as f:
        head, offset = _read_header(f, size)
        payload = f.read()
    if hashlib.sha256(payload).hexdigest() != head["payload_sha256"]:
        raise DamagedStore("payload checksum mismatch")
    feats = np.frombuffer(payload, dtype=np.float32).reshape(head["n"], head["dim"])
    return head, feats
