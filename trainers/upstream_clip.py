"""What upstream trainer files expect of the ``clip`` package they import.

CoOp-style trainers load their CLIP with

    url = clip._MODELS[cfg.MODEL.BACKBONE.NAME]
    model_path = clip._download(url)
    state_dict = torch.load(model_path)  # or torch.jit.load(...).state_dict()
    model = clip.build_model(state_dict)

For OpenAI models MODEL.BACKBONE.NAME holds clip's own spelling ("ViT-B/32"), so
the lookup works unchanged. Two things differ from the copy of clip that CoOp and
its forks carry in their repositories, and ``serve_upstream_clip`` provides them:

- their ``_download(url)`` defaults its folder to ~/.cache/clip, openai-clip's
  ``_download(url, root)`` requires it: the folder now defaults to the clip cache
  (``$CLIP_CACHE``, else ~/.cache/clip), where the weights already are;
- the tiny models (the CPU demo's and the tests') are the same ``clip.model.CLIP``
  class, so they can take the same path: ``clip._MODELS`` answers their canonical
  names (``tiny_vit``, ...) with a ``file://`` URL of their full state dict, written
  once into the clip cache in the folder clip's downloader expects (named by the
  file's SHA256, which it checks). Real OpenAI names are untouched.
"""
import glob
import hashlib
import os
import os.path as osp
import warnings

import torch

from toolbox.utils import atomic_write

with warnings.catch_warnings():  # openai-clip imports the deprecated pkg_resources
    warnings.simplefilter("ignore")
    from clip import clip as clip_api

SERVED_DIR = "served"  # <clip cache>/served/<sha256>/<name>.pt


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tiny_weights_url(name):
    """A ``file://`` URL, in clip's ``<sha256>/<file>`` form, of the full state dict
    of tiny backbone ``name`` (canonical), written on first use."""
    from .backbones import clip_cache_dir, get_backbone
    from .tiny_clip import tiny_state_dict

    entry = get_backbone(name)
    root = osp.join(clip_cache_dir(), SERVED_DIR)
    for path in sorted(glob.glob(osp.join(glob.escape(root), "*", entry.name + ".pt"))):
        if _sha256(path) == osp.basename(osp.dirname(path)):
            return "file://" + path
    state = tiny_state_dict(entry.arch, clip_cache_dir())
    tmp = osp.join(root, "new", entry.name + ".pt")
    atomic_write(tmp, lambda f: torch.save(state, f), mode="wb")
    sha = _sha256(tmp)
    final = osp.join(root, sha, entry.name + ".pt")
    os.makedirs(osp.dirname(final), exist_ok=True)
    os.replace(tmp, final)
    return "file://" + final


class _ClipModels(dict):
    """clip's name -> URL table, answering the tiny models' names too (on lookup)."""

    def _tiny(self, key):
        from .backbones import TINY_MODELS

        return isinstance(key, str) and key in TINY_MODELS

    def __missing__(self, key):
        if not self._tiny(key):
            raise KeyError(key)
        url = tiny_weights_url(key)
        self[key] = url
        return url

    def __contains__(self, key):
        return dict.__contains__(self, key) or self._tiny(key)


_OPENAI_DOWNLOAD = clip_api._download


def _download(url, root=None):
    """openai-clip's downloader, with the folder upstream code leaves out defaulted."""
    from .backbones import clip_cache_dir

    return _OPENAI_DOWNLOAD(url, root or clip_cache_dir())


def serve_upstream_clip():
    """``clip._download(url)`` with a default folder, and ``clip._MODELS[name]`` for the
    tiny models' names too (idempotent)."""
    if not isinstance(clip_api._MODELS, _ClipModels):
        clip_api._MODELS = _ClipModels(clip_api._MODELS)
    clip_api._download = _download
