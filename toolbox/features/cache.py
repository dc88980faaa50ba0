"""A cache of frozen image features shared by every method, seed and shot
count (FEATURE_CACHE.* in toolbox/config.py).

Layout under the cache folder::

    <backbone>-<weights sha256[:12]>/backbone.json
    <backbone>-<weights sha256[:12]>/<task>/<split>-<precision>-<device>-<transform hash>.feat

One store (a ``.feat`` file, see store.py) per (backbone key, task, split,
evaluation transform, precision, device kind), holding one row per image
keyed by the image file's (path, size, mtime). A feature is reused only when
all of these match, so a changed image, weights file, transform or precision
misses. Stores only grow: the train split of every few-shot draw lands in the
same store. A store is (re)built under a file lock, so parallel runs of a grid
compute each image once and never write over each other.

Problems never stop a run: a damaged store is reported in one warning and
rebuilt; a folder that cannot be written is reported in one warning and the
run goes on without the cache.
"""
import glob
import hashlib
import json
import os
import os.path as osp
import re
import time
import warnings

import numpy as np

from .store import SUFFIX, TMP_PREFIX, DamagedStore, atomic_write_bytes, read_store, write_store

DEFAULT_FOLDER = ".feature_cache"
BACKBONE_FILE = "backbone.json"
LOCK_SUFFIX = ".lock"


def user_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or osp.join(osp.expanduser("~"), ".cache")
    return osp.join(base, "clip_feature_cache")


def _writable_or_creatable(folder):
    """True when ``folder`` exists and is writable, or could be created."""
    folder = osp.abspath(folder)
    while not osp.exists(folder):
        parent = osp.dirname(folder)
        if parent == folder:
            return False
        folder = parent
    return osp.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)


def resolve_dir(cfg_dir, data_root):
    """FEATURE_CACHE.DIR, or ``<DATASET.ROOT>/.feature_cache`` when the data
    root is writable, else the user's cache folder."""
    if cfg_dir:
        return osp.abspath(osp.expanduser(cfg_dir))
    if data_root:
        beside = osp.join(osp.abspath(osp.expanduser(data_root)), DEFAULT_FOLDER)
        if _writable_or_creatable(beside):
            return beside
    return user_cache_dir()


def slug(text):
    """A file-name-safe form of a backbone or task name (ViT-B/16 -> ViT-B-16)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", str(text)).strip("-.") or "x"


def effective_precision(device_kind, prec):
    """The precision the image encoder really runs in: fp32 on CPU (PREC is
    ignored there), else fp16 (PREC fp16/amp), bf16 or fp32."""
    if device_kind != "cuda" or prec == "fp32":
        return "fp32"
    return "bf16" if prec == "bf16" else "fp16"


def image_entry(path):
    """(absolute path, size, mtime_ns): what identifies an image file's content."""
    st = os.stat(path)
    return (osp.abspath(path), int(st.st_size), int(st.st_mtime_ns))


def remove_dead_temp_files(path):
    """Delete the temp files of earlier writes of store ``path`` (killed runs).

    Only the holder of the store's lock writes it, and the caller holds it, so
    every ``.tmp-<store>-*`` file there was left by a writer that is gone."""
    pattern = osp.join(glob.escape(osp.dirname(path)), glob.escape(TMP_PREFIX + osp.basename(path))
                       + "-*")
    for tmp in glob.glob(pattern):
        try:
            os.remove(tmp)
        except OSError:
            pass


class FeatureCache:
    """Features of one backbone under one evaluation transform, precision and
    device kind; ``features()`` returns cached rows and computes the rest."""

    def __init__(self, directory, identity, transform, precision, device_kind):
        self.dir = directory
        self.identity = identity  # {"name", "weights_sha256", "weights_file"}
        self.transform = transform  # exact text of the evaluation transform
        self.precision = precision
        self.device_kind = device_kind
        self.writable = True
        tfm_hash = hashlib.sha256(transform.encode()).hexdigest()[:10]
        self.variant = f"{precision}-{device_kind}-{tfm_hash}"
        self.stats = {"hits": 0, "computed": 0}

    @property
    def backbone_dir(self):
        return osp.join(self.dir, f"{slug(self.identity['name'])}-"
                                  f"{self.identity['weights_sha256'][:12]}")

    def store_path(self, task, split):
        return osp.join(self.backbone_dir, slug(task), f"{split}-{self.variant}{SUFFIX}")

    def _header(self, task, split):
        return {"backbone": self.identity["name"],
                "weights_sha256": self.identity["weights_sha256"],
                "task": task, "split": split, "transform": self.transform,
                "precision": self.precision, "device": self.device_kind,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def _warn_unwritable(self, err):
        if self.writable:
            warnings.warn(f"cannot write the feature cache in {self.dir} ({type(err).__name__}: "
                          f"{err}); going on without it (set FEATURE_CACHE.DIR to a writable "
                          "folder, or FEATURE_CACHE.ENABLED False)", stacklevel=3)
        self.writable = False

    def _load(self, path, damaged):
        """{path: (size, mtime_ns, row)}, features; empty for a missing or damaged store."""
        try:
            head, feats = read_store(path)
        except OSError:  # none yet, or unreadable: computed (and written if possible)
            return {}, None
        except DamagedStore as e:
            if path not in damaged:
                warnings.warn(f"damaged feature cache file {path} ({e}); rebuilding it",
                              stacklevel=3)
            damaged.add(path)
            return {}, None
        foreign = self._foreign(head, path)
        if foreign:
            # a store copied or moved here from another backbone, task, split or transform
            # (or a hash collision of the transform text): never served, rebuilt
            if path not in damaged:
                warnings.warn(f"feature cache file {path} holds features of another {foreign}; "
                              "rebuilding it", stacklevel=3)
            damaged.add(path)
            return {}, None
        index = {p: (s, m, i) for i, (p, s, m) in enumerate(head["entries"])}
        return index, feats

    def _foreign(self, head, path):
        """What of the store's header differs from what ``path`` stands for ('' if nothing)."""
        want = self._header(head.get("task"), head.get("split"))
        for key in ("backbone", "weights_sha256", "transform", "precision", "device"):
            if head.get(key) != want[key]:
                return f"{key} ({str(head.get(key))[:40]!s})"
        task, split = head.get("task"), head.get("split")
        if not isinstance(task, str) or not isinstance(split, str) or \
                self.store_path(task, split) != path:
            return f"task/split ({task}/{split})"
        return ""

    def features(self, items, split, task_names, encode):
        """Features (len(items), dim) float32 of ``items`` (Datum list) in order,
        or None when the cache cannot serve them (the caller then evaluates as
        without a cache).

        ``task_names[i]`` is the task of ``items[i]``; ``encode(positions)``
        yields (positions chunk, features array) for the given item positions,
        in order and in the batches the uncached evaluation would use.
        """
        try:
            entries = [image_entry(it.impath) for it in items]
        except OSError:
            return None  # a missing image: the uncached path reports it properly
        groups = {}
        for i, t in enumerate(task_names):
            groups.setdefault(t, []).append(i)
        out = [None] * len(items)
        computed = self.stats["computed"]
        damaged = set()
        missing = self._fill(groups, entries, split, out, damaged)
        if missing:
            if not self.writable:
                return None
            try:
                locks = self._lock_all(sorted(self.store_path(t, split) for t in missing))
            except OSError as e:
                self._warn_unwritable(e)
                return None
            try:
                # another run may have built them while this one waited
                missing = self._fill({t: groups[t] for t in missing}, entries, split, out,
                                     damaged)
                if missing:
                    self._build(missing, groups, entries, split, out, damaged, encode)
            finally:
                for lock in locks:
                    lock.release()
        self.stats["hits"] += len(items) - (self.stats["computed"] - computed)
        return np.stack(out) if out else np.zeros((0, 0), np.float32)

    def _fill(self, groups, entries, split, out, damaged):
        """Fill ``out`` from the stores; return {task: positions still missing}."""
        missing = {}
        for task, positions in groups.items():
            index, feats = self._load(self.store_path(task, split), damaged)
            for i in positions:
                path, size, mtime = entries[i]
                hit = index.get(path)
                if hit is not None and hit[0] == size and hit[1] == mtime:
                    out[i] = feats[hit[2]]
                else:
                    missing.setdefault(task, []).append(i)
        return missing

    def _build(self, missing, groups, entries, split, out, damaged, encode):
        todo = sorted(i for positions in missing.values() for i in positions)
        for chunk, feats in encode(todo):
            for i, f in zip(chunk, np.asarray(feats, dtype=np.float32)):
                out[i] = f
        self.stats["computed"] += len(todo)
        self._write_identity()
        for task, positions in missing.items():
            path = self.store_path(task, split)
            index, old = self._load(path, damaged)
            new = {entries[i][0]: i for i in positions}
            keep = [(p, s, m, r) for p, (s, m, r) in index.items() if p not in new]
            rows = [old[r] for *_, r in keep] + [out[i] for i in new.values()]
            ents = [(p, s, m) for p, s, m, _ in keep] + [entries[i] for i in new.values()]
            if not self.writable:
                return
            try:
                remove_dead_temp_files(path)
                write_store(path, self._header(task, split), ents, np.stack(rows))
            except OSError as e:
                self._warn_unwritable(e)
                return

    def _write_identity(self):
        path = osp.join(self.backbone_dir, BACKBONE_FILE)
        if osp.isfile(path) or not self.writable:
            return
        try:
            atomic_write_bytes(path, [json.dumps(self.identity, indent=1).encode()])
        except OSError as e:
            self._warn_unwritable(e)

    def _lock_all(self, paths):
        from filelock import FileLock, Timeout

        from .store import file_mode

        locks = []
        try:
            for path in paths:
                os.makedirs(osp.dirname(path), exist_ok=True)
                lock = FileLock(path + LOCK_SUFFIX, mode=file_mode())
                try:
                    lock.acquire(timeout=2)
                except Timeout:
                    print(f"Waiting for another run building {path}", flush=True)
                    lock.acquire()
                locks.append(lock)
        except BaseException:
            for lock in locks:
                lock.release()
            raise
        return locks
