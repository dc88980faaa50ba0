"""The backbone registry: every CLIP the toolbox can run, under one name each.

A backbone is one entry: its canonical name (the string configs, scripts,
output folders, results.json and tools use), the older names that still work
as aliases, its family (``openai`` through the openai-clip package,
``open_clip`` through open-clip-torch, ``tiny`` for the built-in tiny CLIPs),
and what the family needs to build it (architecture, preprocessing, where the
weights live). Registration and lookup follow timm's ``_registry`` (register,
list with a filter, aliases); ``create_backbone`` turns a name (or a local
checkpoint file) into a ready model plus its preprocessing, as OpenCLIP's
factory does.

Names:
- OpenAI CLIP: ``rn50 rn101 rn50x4 rn50x16 rn50x64 vit_b32 vit_b16 vit_l14
  vit_l14_336`` (aliases: clip's own names ``RN50``, ``ViT-B/16``, ...).
- OpenCLIP: ``open_clip:<arch>`` for every architecture open_clip knows
  (``open_clip.list_models()``), with ``MODEL.BACKBONE.PRETRAINED <tag>`` or
  ``MODEL.BACKBONE.PATH <checkpoint>``; short aliases ``oc_vit_b32`` ....
- Tiny: ``tiny_vit`` / ``tiny_rn`` (pre-trained on the digits, the demo's),
  ``tiny_vit_random`` / ``tiny_rn_random`` (seeded random, for tests); the old
  names ``tiny-vit-digits``, ``tiny-rn-digits``, ``tiny-vit``, ``tiny-rn``
  are aliases.

Functions the rest of the toolbox uses: ``canonical_name``, ``get_backbone``,
``list_backbones``, ``backbone_preprocess``, ``fill_input_defaults`` (called
when a config is built), ``weights_file_for_cfg`` (the local weights file a
config resolves to, for caches keyed on weights), ``create_backbone``.
"""
import difflib
import fnmatch
import os
import os.path as osp
from dataclasses import dataclass, field

from toolbox.errors import UserError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
OPEN_CLIP_PREFIX = "open_clip:"
RANDOM = "random"  # MODEL.BACKBONE.PRETRAINED value: the architecture with seeded random weights

# Dassl's own defaults, used when a config names no backbone.
DASSL_INPUT = dict(size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                   interpolation="bilinear")


def _openai_spec(embed, res, vlayers, vwidth, patch, twidth, theads):
    """``clip.model.CLIP`` arguments of an OpenAI model (as build_model infers them)."""
    return dict(embed_dim=embed, image_resolution=res, vision_layers=vlayers,
                vision_width=vwidth, vision_patch_size=patch, context_length=77,
                vocab_size=49408, transformer_width=twidth, transformer_heads=theads,
                transformer_layers=12)


# canonical name: (clip's name, CLIP arguments)
OPENAI_MODELS = {
    "rn50": ("RN50", _openai_spec(1024, 224, (3, 4, 6, 3), 64, None, 512, 8)),
    "rn101": ("RN101", _openai_spec(512, 224, (3, 4, 23, 3), 64, None, 512, 8)),
    "rn50x4": ("RN50x4", _openai_spec(640, 288, (4, 6, 10, 6), 80, None, 640, 10)),
    "rn50x16": ("RN50x16", _openai_spec(768, 384, (6, 8, 18, 8), 96, None, 768, 12)),
    "rn50x64": ("RN50x64", _openai_spec(1024, 448, (3, 15, 36, 10), 128, None, 1024, 16)),
    "vit_b32": ("ViT-B/32", _openai_spec(512, 224, 12, 768, 32, 512, 8)),
    "vit_b16": ("ViT-B/16", _openai_spec(512, 224, 12, 768, 16, 512, 8)),
    "vit_l14": ("ViT-L/14", _openai_spec(768, 224, 24, 1024, 14, 768, 12)),
    "vit_l14_336": ("ViT-L/14@336px", _openai_spec(768, 336, 24, 1024, 14, 768, 12)),
}

# canonical name: (tiny_clip's name, aliases)
TINY_MODELS = {
    "tiny_vit": ("tiny-vit-digits", ("tiny-vit-digits",)),
    "tiny_rn": ("tiny-rn-digits", ("tiny-rn-digits",)),
    "tiny_vit_random": ("tiny-vit", ("tiny-vit",)),
    "tiny_rn_random": ("tiny-rn", ("tiny-rn",)),
}

# Short names for OpenCLIP architectures often used for prompt tuning.
OPEN_CLIP_ALIASES = {
    "oc_rn50": "RN50", "oc_rn101": "RN101", "oc_vit_b32": "ViT-B-32",
    "oc_vit_b16": "ViT-B-16", "oc_vit_l14": "ViT-L-14", "oc_vit_h14": "ViT-H-14",
    "oc_convnext_base": "convnext_base", "oc_convnext_base_w": "convnext_base_w",
}


@dataclass
class Backbone:
    name: str                 # canonical
    family: str               # openai | open_clip | tiny
    arch: str                 # clip's / open_clip's / tiny_clip's own name
    aliases: tuple = ()
    description: str = ""
    spec: dict = field(default_factory=dict)   # clip.model.CLIP arguments (openai, tiny)

    @property
    def tiny(self):
        """A tiny model for tests and the CPU demo (the tiny CLIPs, and OpenCLIP's
        tiny-* architectures of trainers/open_clip_configs): the tiny recipes apply."""
        return self.family == "tiny" or (self.family == "open_clip"
                                         and self.arch.lower().startswith("tiny-"))

    @property
    def needs_weights_choice(self):
        """open_clip entries need PRETRAINED or PATH; the others have defaults."""
        return self.family == "open_clip"


_REGISTRY = {}  # canonical name -> Backbone
_ALIASES = {}   # alias -> canonical name
_OPEN_CLIP_SCANNED = False


def register_backbone(entry):
    """Add ``entry`` (a Backbone) under its name and aliases; returns it."""
    for n in (entry.name,) + tuple(entry.aliases):
        owner = _REGISTRY.get(n) or _REGISTRY.get(_ALIASES.get(n, ""))
        if owner is not None and owner.name != entry.name:
            raise ValueError(f"backbone name '{n}' is already taken by '{owner.name}'")
    _REGISTRY[entry.name] = entry
    for a in entry.aliases:
        _ALIASES[a] = entry.name
    return entry


def _register_builtin():
    for name, (clip_name, spec) in OPENAI_MODELS.items():
        aliases = (clip_name,)
        register_backbone(Backbone(name, "openai", clip_name, aliases,
                                   f"OpenAI CLIP {clip_name}", spec))
    from .tiny_clip import TINY_SPECS

    for name, (tiny_name, aliases) in TINY_MODELS.items():
        base = tiny_name.replace("-digits", "")
        what = "pre-trained on the sklearn digits" if tiny_name.endswith("-digits") else \
            "random (seeded)"
        register_backbone(Backbone(name, "tiny", tiny_name, aliases,
                                   f"tiny CLIP ({base}), {what}", TINY_SPECS[base]))


# Tiny OpenCLIP architectures (random weights) for tests and CPU benchmarks:
# open_clip:tiny-ViT, open_clip:tiny-RN, open_clip:tiny-convnext.
TINY_OPEN_CLIP_CONFIGS = osp.join(osp.dirname(osp.abspath(__file__)), "open_clip_configs")
_OPEN_CLIP_READY = False


def _open_clip():
    global _OPEN_CLIP_READY
    import open_clip

    if not _OPEN_CLIP_READY:
        _OPEN_CLIP_READY = True
        open_clip.add_model_config(TINY_OPEN_CLIP_CONFIGS)
    return open_clip


def _scan_open_clip():
    """Register every architecture open_clip knows (also configs added later
    with ``open_clip.add_model_config``: lookups rescan)."""
    global _OPEN_CLIP_SCANNED
    _OPEN_CLIP_SCANNED = True
    inverse = {}
    for alias, arch in OPEN_CLIP_ALIASES.items():
        inverse.setdefault(arch, []).append(alias)
    for arch in _open_clip().list_models():
        name = OPEN_CLIP_PREFIX + arch
        if name not in _REGISTRY:
            register_backbone(Backbone(name, "open_clip", arch, tuple(inverse.get(arch, ())),
                                       f"OpenCLIP {arch}"))


_register_builtin()


def _resolve(name):
    if name in _REGISTRY:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    return None


def is_backbone(name):
    return _lookup(name, rescan=True) is not None


def _lookup(name, rescan):
    found = _resolve(name)
    if found is None and rescan and (not _OPEN_CLIP_SCANNED or name.startswith(OPEN_CLIP_PREFIX)
                                     or name in OPEN_CLIP_ALIASES):
        _scan_open_clip()
        found = _resolve(name)
    return found


def list_backbones(filter="", family=None, aliases=False):
    """Sorted canonical names (with ``aliases=True`` also the aliases) matching
    the shell-style ``filter`` (case-insensitive, e.g. ``"open_clip:vit-b*"``)
    and ``family``."""
    _scan_open_clip()
    names = []
    for entry in _REGISTRY.values():
        if family and entry.family != family:
            continue
        names.append(entry.name)
        if aliases:
            names.extend(entry.aliases)
    if filter:
        names = [n for n in names if fnmatch.fnmatchcase(n.lower(), filter.lower())]
    order = {n: i for i, n in enumerate(_REGISTRY)}
    return sorted(set(names), key=lambda n: (n.startswith(OPEN_CLIP_PREFIX),
                                             order.get(_resolve(n), 0), n.lower()))


def _unknown(name):
    _scan_open_clip()
    everything = list(_REGISTRY) + list(_ALIASES)
    close = difflib.get_close_matches(name, everything, n=1, cutoff=0.4)
    if not close:  # case-insensitive and OpenCLIP-style spellings
        low = {n.lower().replace("/", "-"): n for n in everything}
        close = difflib.get_close_matches(name.lower().replace("/", "-"), list(low), n=1,
                                          cutoff=0.4)
        close = [low[c] for c in close]
    hint = ""
    if close:
        canon = _resolve(close[0])
        hint = f" (closest: '{close[0]}'" + (f" = {canon})" if canon != close[0] else ")")
    builtin = [n for n in _REGISTRY if not n.startswith(OPEN_CLIP_PREFIX)]
    return UserError(f"unknown backbone '{name}'{hint}; registered: {', '.join(builtin)}, "
                     f"and open_clip:<arch> for the {len(_REGISTRY) - len(builtin)} OpenCLIP "
                     "architectures (python tools/backbones.py lists them all)")


def canonical_name(name):
    """The canonical name of backbone ``name`` (any alias), or of a config's
    MODEL.BACKBONE.NAME ("" when it names none); UserError if unknown. Folders,
    results.json, tables and caches use this name, never the config's spelling."""
    if hasattr(name, "MODEL"):  # a config
        name = name.MODEL.BACKBONE.NAME
        if not name:
            return ""
    found = _lookup(str(name), rescan=True)
    if found is None:
        raise _unknown(str(name))
    return found


def get_backbone(name):
    """The registry entry of ``name`` (any alias)."""
    return _REGISTRY[canonical_name(name)]


def config_name(name):
    """What MODEL.BACKBONE.NAME holds for backbone ``name`` (any alias): clip's own
    spelling for OpenAI models ("ViT-B/32", "RN50"), so that upstream trainers'
    ``clip._MODELS[cfg.MODEL.BACKBONE.NAME]`` finds it; the canonical name otherwise
    (the tiny models are served to clip._MODELS under it: trainers/upstream_clip.py)."""
    entry = get_backbone(name)
    return entry.arch if entry.family == "openai" else entry.name


# ---- preprocessing --------------------------------------------------------------


def _open_clip_preprocess(arch, pretrained=""):
    oc = _open_clip()
    from open_clip.transform import PreprocessCfg

    model_cfg = oc.get_model_config(arch) or {}
    size = model_cfg.get("vision_cfg", {}).get("image_size", PreprocessCfg.size)
    if isinstance(size, (list, tuple)):
        size = size[0] if len(set(size)) == 1 else tuple(size)
    out = dict(size=size, mean=tuple(PreprocessCfg.mean), std=tuple(PreprocessCfg.std),
               interpolation=PreprocessCfg.interpolation)
    tag_cfg = oc.get_pretrained_cfg(arch, pretrained) if pretrained else {}
    for key in ("mean", "std", "interpolation"):
        if tag_cfg.get(key):
            out[key] = tuple(tag_cfg[key]) if key != "interpolation" else tag_cfg[key]
    return out


def backbone_preprocess(name, pretrained=""):
    """{size, mean, std, interpolation} of backbone ``name`` (OpenAI's
    constants, OpenCLIP's model/pretrained config)."""
    entry = get_backbone(name)
    if entry.family == "open_clip":
        return _open_clip_preprocess(entry.arch, pretrained)
    return dict(size=entry.spec["image_resolution"], mean=OPENAI_MEAN, std=OPENAI_STD,
                interpolation="bicubic")


def fill_input_defaults(cfg):
    """Spell MODEL.BACKBONE.NAME as upstream code expects (``config_name``: clip's
    name for OpenAI models, the canonical name otherwise; the config digest maps it
    back to the canonical name) and fill the INPUT keys a config left unset (SIZE,
    PIXEL_MEAN, PIXEL_STD, INTERPOLATION) from the backbone; with no backbone,
    Dassl's defaults. Call on an unfrozen config after all merges."""
    name = cfg.MODEL.BACKBONE.NAME
    if not name and cfg.MODEL.BACKBONE.PATH:
        raise _no_name(cfg.MODEL.BACKBONE.PATH)
    if name:
        canon = canonical_name(name)
        cfg.MODEL.BACKBONE.NAME = config_name(canon)
        tag = str(cfg.MODEL.BACKBONE.PRETRAINED or "")
        check_backbone_choice(canon, tag, cfg.MODEL.BACKBONE.PATH)
        pre = backbone_preprocess(canon, "" if tag == RANDOM else tag)
        # clip._MODELS[NAME] and clip._download(url) as upstream trainer files use them
        from .upstream_clip import serve_upstream_clip

        serve_upstream_clip()
    else:
        pre = DASSL_INPUT
    size = pre["size"]
    if not cfg.INPUT.SIZE:
        cfg.INPUT.SIZE = tuple(size) if isinstance(size, tuple) else (size, size)
    if not cfg.INPUT.PIXEL_MEAN:
        cfg.INPUT.PIXEL_MEAN = [float(v) for v in pre["mean"]]
    if not cfg.INPUT.PIXEL_STD:
        cfg.INPUT.PIXEL_STD = [float(v) for v in pre["std"]]
    if not cfg.INPUT.INTERPOLATION:
        cfg.INPUT.INTERPOLATION = pre["interpolation"]
    return cfg


# ---- weights ----------------------------------------------------------------------


def clip_cache_dir():
    return osp.expanduser(os.environ.get("CLIP_CACHE", "~/.cache/clip"))


def openai_weights_file(clip_name):
    """Where the clip package keeps the weights of ``clip_name`` (e.g. RN50)."""
    from clip import clip as clip_api

    return osp.join(clip_cache_dir(), osp.basename(clip_api._MODELS[clip_name]))


def _open_clip_tag_cfg(arch, tag):
    oc = _open_clip()
    cfg = oc.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = oc.list_pretrained_tags_by_model(arch)
        raise UserError(f"unknown MODEL.BACKBONE.PRETRAINED '{tag}' for open_clip:{arch}; "
                        f"its tags: {', '.join(tags) if tags else 'none (give MODEL.BACKBONE.PATH)'}")
    return cfg


def open_clip_cached_file(arch, tag):
    """The local file of OpenCLIP weights ``arch``/``tag`` if open_clip's cache
    holds it (Hugging Face hub cache or ~/.cache/clip for URLs), else None."""
    cfg = _open_clip_tag_cfg(arch, tag)
    if cfg.get("file"):
        return cfg["file"] if osp.isfile(cfg["file"]) else None
    hub = cfg.get("hf_hub", "")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
            from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives
        except ImportError:
            hub = ""
        else:
            repo, filename = os.path.split(hub)
            filename = filename or HF_WEIGHTS_NAME
            for fn in list(_get_safe_alternatives(filename)) + [filename]:
                found = try_to_load_from_cache(repo, fn)
                if isinstance(found, str) and osp.isfile(found):
                    return found
    if cfg.get("url"):
        path = osp.join(osp.expanduser("~/.cache/clip"), osp.basename(cfg["url"]))
        if osp.isfile(path):
            return path
    return None


def weights_file(name, pretrained="", path=""):
    """The local weights file backbone ``name`` is built from: ``path`` when
    given; the clip cache file (OpenAI; it may not exist before the first
    download); open_clip's cached file for ``pretrained`` (None while not
    downloaded); the tiny model's file (None for the random tiny models)."""
    if path:
        return osp.abspath(osp.expanduser(path))
    if pretrained == RANDOM:
        return None
    entry = get_backbone(name)
    if entry.family == "openai":
        return openai_weights_file(entry.arch)
    if entry.family == "tiny":
        from .tiny_clip import tiny_weights_file

        return tiny_weights_file(entry.arch, clip_cache_dir())
    if not pretrained:
        return None
    return open_clip_cached_file(entry.arch, pretrained)


def weights_file_for_cfg(cfg):
    """``weights_file`` for MODEL.BACKBONE of ``cfg``: with ``canonical_name``,
    the identity of a backbone (canonical name + content hash of this file).
    After the model was built (``load_clip_from_cfg``) it is an existing file,
    or None for the random tiny models."""
    b = cfg.MODEL.BACKBONE
    return weights_file(b.NAME, str(b.PRETRAINED or ""), b.PATH)


def open_clip_text_problem(arch):
    """Why the text tower of OpenCLIP ``arch`` does not fit prompt learning, or None."""
    open_clip = _open_clip()

    cfg = open_clip.get_model_config(arch) or {}
    t = cfg.get("text_cfg", {})
    if "hf_model_name" in t:
        return f"its text tower is a Hugging Face model ({t['hf_model_name']})"
    if "multimodal_cfg" in cfg or t.get("embed_cls"):
        return "it is a CoCa model (a class token and a text decoder)"
    pool = t.get("pool_type", "argmax")
    if pool != "argmax":
        return (f"its text tower pools with '{pool}' (SigLIP-style), not at the end-of-text token"
                + (" and has no causal mask" if t.get("no_causal_mask") else ""))
    if t.get("no_causal_mask"):
        return "its text attention has no causal mask"
    if "hf_tokenizer_name" in t or t.get("vocab_size", 49408) != 49408:
        return "its tokenizer is not CLIP's BPE"
    return None


def open_clip_tags(name):
    """The OpenCLIP weights tags of backbone ``name``, comma-separated ('' if none)."""
    return ", ".join(_open_clip().list_pretrained_tags_by_model(get_backbone(name).arch))


def check_backbone_choice(name, pretrained="", path=""):
    """Refuse, before anything is built or written, a backbone the prompt code
    cannot use or an OpenCLIP model without a weights choice."""
    entry = get_backbone(name)
    if entry.family != "open_clip":
        if pretrained and pretrained != RANDOM:
            twin = OPEN_CLIP_PREFIX + entry.arch.replace("/", "-").replace("@336px", "-336")
            instead = f"use {twin} for OpenCLIP's weights of it" if entry.family == "openai" and \
                _lookup(twin, rescan=True) else "tags only apply to open_clip:<arch> backbones"
            source = "the clip cache" if entry.family == "openai" else "trainers/tiny_clip.py"
            raise UserError(f"MODEL.BACKBONE.PRETRAINED '{pretrained}' is an OpenCLIP weights tag, "
                            f"but backbone {entry.name} takes its weights from {source} or "
                            f"MODEL.BACKBONE.PATH: drop MODEL.BACKBONE.PRETRAINED ({instead})")
        return
    problem = open_clip_text_problem(entry.arch)
    if problem:
        raise UserError(f"backbone {entry.name} cannot be prompt-tuned here: {problem}; supported are "
                        "OpenAI CLIPs, the tiny CLIPs and OpenCLIP models with CLIP's text transformer "
                        "(causal mask, pooling at the end-of-text token), e.g. open_clip:ViT-B-32, "
                        "open_clip:RN50, open_clip:convnext_base")
    if path or pretrained == RANDOM:
        return
    if not pretrained:
        raise UserError(f"backbone {entry.name} needs MODEL.BACKBONE.PRETRAINED <tag> (its tags: "
                        f"{open_clip_tags(entry.name) or 'none'}; or 'random') or "
                        "MODEL.BACKBONE.PATH <checkpoint>")
    _open_clip_tag_cfg(entry.arch, pretrained)  # an unknown tag: one line with the known ones


# ---- the factory --------------------------------------------------------------------


def _no_name(path=""):
    if not path:
        return UserError("no backbone: set MODEL.BACKBONE.NAME (python tools/backbones.py lists "
                         "the names)")
    from . import clip_model

    sd = clip_model._read_weights(clip_model._check_path(path))
    held = clip_model.describe_checkpoint(sd)
    return UserError(f"MODEL.BACKBONE.PATH {path} is set but MODEL.BACKBONE.NAME is empty: set it "
                     f"to the checkpoint's architecture (it holds {held})")


def backbone_of_checkpoint(path):
    """The registered backbone whose architecture the checkpoint ``path`` holds
    (OpenAI layout, as OpenAI's files and OpenCLIP's plain CLIPs). OpenAI's own
    files (TorchScript) are OpenAI CLIPs; a plain state dict must match one family
    (e.g. tiny_vit / tiny_vit_random): the same shapes as an OpenAI and an OpenCLIP
    entry leave the activation (QuickGELU or GELU) open, so that is a UserError."""
    from . import clip_model

    file = clip_model._check_path(path)
    sd = clip_model._read_weights(file)
    names = clip_model.matching_backbones(sd)
    if names and clip_model._is_torchscript(file):
        names = [n for n in names if get_backbone(n).family != "open_clip"] or names
    if not names or len({get_backbone(n).family for n in names}) > 1:
        raise UserError(f"checkpoint {path} holds {clip_model.describe_checkpoint(sd)}; give its "
                        "backbone name with it (MODEL.BACKBONE.NAME + MODEL.BACKBONE.PATH, or "
                        "create_backbone(name, path=...))")
    return names[0]


def create_backbone(name, pretrained="", path="", device="cpu", random_weights=False,
                    activation=""):
    """(model, preprocess) for backbone ``name`` (any alias) or a checkpoint
    file: a frozen fp32 model in eval mode, and {size, mean, std, interpolation}.

    ``name``: a registered name, or the path of a checkpoint file (its
    architecture is looked up in the registry: ``backbone_of_checkpoint``);
    ``path``: a local checkpoint (any family) for backbone ``name``;
    ``pretrained``: an OpenCLIP tag, or ``"random"`` (any family) for the
    architecture with seeded random weights, as ``random_weights`` (benchmarks,
    tests); ``activation``: MODEL.BACKBONE.ACTIVATION (clip_model.check_activation).
    """
    from . import clip_model

    if not name:
        raise _no_name(path)
    if not path and _lookup(str(name), rescan=True) is None and \
            osp.isfile(osp.expanduser(str(name))):
        # a checkpoint file alone: the registered architecture it holds
        path, name = str(name), backbone_of_checkpoint(str(name))
    entry = get_backbone(name)
    pretrained = "" if pretrained in (True, False, None) else str(pretrained)
    if pretrained == RANDOM:
        random_weights, pretrained = True, ""
    if entry.family == "open_clip":
        model = clip_model.load_open_clip(entry, pretrained, path, random_weights, activation)
    else:
        model = clip_model.load_openai_style(entry, path, random_weights, activation)
    model = model.float().eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    pre = backbone_preprocess(entry.name, pretrained)
    return model, pre
