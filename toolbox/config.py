"""All default config keys, as in Dassl's ``dassl.config.defaults``.

Keys that Dassl-style prompt-tuning code reads keep Dassl's names and defaults. Trainer-
specific groups (TRAINER.COOP, ...) are added by ``trainers.extend_cfg``.
Keys marked "kept for Dassl compatibility; no effect" are accepted so that upstream Dassl config files load
unchanged; train.py warns once when a config or the command line sets one to
anything but its default (``NO_EFFECT_KEYS``).

Also here: config files with ``_BASE_`` includes (``load_yaml_with_bases``,
``load_trainer_yaml``), and a run's identity, ``config_digest``, with the rule that
keeps it stable when keys are added ("Run identity" below; docs/config_files.md).
"""
import hashlib
import json
import os.path as osp
import warnings

import yaml
from yacs.config import CfgNode as CN

from .errors import UserError, check_choice, yaml_error

NO_EFFECT = "kept for Dassl compatibility; no effect"

# ---- config files with _BASE_ -------------------------------------------------------
# A config file may start with ``_BASE_: <path>`` (or a list of paths), relative to
# the file itself, as detectron2's and the Dassl forks' configs do: the base is loaded
# first (its own _BASE_ too), then the file's keys override it. The trainer recipes
# live in configs/trainers/<Trainer>/base/ and each backbone file states what differs.
BASE_KEY = "_BASE_"


def _read_yaml(path):
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {path} holds a {type(data).__name__}, not KEY: VALUE "
                        "pairs; write it as nested KEY: VALUE lines")
    return data


def _deep_merge(into, other):
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value
    return into


def load_yaml_with_bases(path, _chain=()):
    """The dict a config file stands for: its ``_BASE_`` files merged (recursively,
    in order), then its own keys. A missing file, a missing base or a cycle is one
    UserError line."""
    given, path = path, osp.abspath(osp.expanduser(path))
    if path in _chain:
        cycle = " -> ".join(osp.relpath(p) for p in _chain + (path,))
        raise UserError(f"config files include each other through _BASE_ ({cycle}); remove "
                        "one of these _BASE_ lines")
    if not osp.isfile(path):
        if _chain:
            raise UserError(f"_BASE_ of {_chain[-1]}: file not found: {path}; give the base's "
                            "path relative to the including file")
        raise UserError(f"config file not found: {given}")
    data = _read_yaml(path)
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise UserError(f"{path}: _BASE_ must be a file path or a list of paths, got {bases!r}")
    merged = {}
    for base in bases:
        _deep_merge(merged, load_yaml_with_bases(osp.join(osp.dirname(path), base),
                                                 _chain + (path,)))
    return _deep_merge(merged, data)


def load_trainer_yaml(path):
    """A trainer (or dataset) config file as the nested dict it stands for, its
    ``_BASE_`` files merged in: for tools that read a key without building a config
    (e.g. ``load_trainer_yaml(f).get("TRAINER", {}).get("COOP", {}).get("CTX_INIT")``)."""
    return load_yaml_with_bases(path)


class CfgNode(CN):
    """yacs' CfgNode whose ``merge_from_file`` resolves ``_BASE_`` (Dassl's config
    object otherwise: the same keys, types and checks)."""

    def merge_from_file(self, cfg_filename):
        self.merge_from_other_cfg(CN(load_yaml_with_bases(cfg_filename)))

    @classmethod
    def _decode_cfg_value(cls, value):
        # nested groups are plain yacs nodes (yacs checks a merged group's exact type)
        return CN(value) if isinstance(value, dict) else super()._decode_cfg_value(value)


_C = CfgNode()

_C.VERSION = 1  # config format version (Dassl's); kept for Dassl compatibility; no effect
_C.OUTPUT_DIR = "./output"  # logs, checkpoints, results.json (train.py's --output-dir)
_C.RESUME = ""  # folder to resume from (train.py's --resume)
_C.SEED = -1  # fixed seed (0 or more) for python, numpy and torch; <0: no fixed seed
_C.USE_CUDA = True  # use the GPU when one is available
_C.VERBOSE = True  # print the dataset summary and the trainer being built

###########################
# Input
###########################
_C.INPUT = CN()
_C.INPUT.SIZE = ()  # () = the backbone's (trainers/backbones.py; Dassl: (224, 224))
_C.INPUT.INTERPOLATION = ""  # "" = the backbone's (CLIP: bicubic; Dassl: bilinear)
_C.INPUT.TRANSFORMS = ()  # e.g. ("random_resized_crop", "random_flip", "normalize")
_C.INPUT.NO_TRANSFORM = False  # True: no transform at all (images as read)
_C.INPUT.PIXEL_MEAN = []  # [] = the backbone's (Dassl: ImageNet's [0.485, 0.456, 0.406])
_C.INPUT.PIXEL_STD = []  # [] = the backbone's (Dassl: [0.229, 0.224, 0.225])
_C.INPUT.CROP_PADDING = 4  # random_crop: padding in pixels
_C.INPUT.RRCROP_SCALE = (0.08, 1.0)  # random_resized_crop: range of the crop's area share
_C.INPUT.CUTOUT_N = 1  # cutout: number of holes
_C.INPUT.CUTOUT_LEN = 16  # cutout: side of a hole in pixels
_C.INPUT.GN_MEAN = 0.0  # gaussian_noise: mean
_C.INPUT.GN_STD = 0.15  # gaussian_noise: standard deviation
_C.INPUT.RANDAUGMENT_N = 2  # RandAugment operations per image; kept for Dassl compatibility; no effect
_C.INPUT.RANDAUGMENT_M = 10  # RandAugment magnitude; kept for Dassl compatibility; no effect
_C.INPUT.COLORJITTER_B = 0.4  # colorjitter: brightness
_C.INPUT.COLORJITTER_C = 0.4  # colorjitter: contrast
_C.INPUT.COLORJITTER_S = 0.4  # colorjitter: saturation
_C.INPUT.COLORJITTER_H = 0.1  # colorjitter: hue
_C.INPUT.RGS_P = 0.2  # random_gray_scale: probability
_C.INPUT.GB_P = 0.5  # gaussian_blur: probability
_C.INPUT.GB_K = 21  # gaussian_blur: kernel size

###########################
# Dataset
###########################
_C.DATASET = CN()
_C.DATASET.ROOT = ""  # folder holding all datasets ($DATA, train.py's --root)
_C.DATASET.NAME = ""  # registered dataset or suite name
_C.DATASET.SOURCE_DOMAINS = ()  # domain adaptation/generalisation sources; kept for Dassl compatibility; no effect
_C.DATASET.TARGET_DOMAINS = ()  # domain adaptation/generalisation targets; kept for Dassl compatibility; no effect
_C.DATASET.NUM_LABELED = -1  # labelled images (semi-supervised); kept for Dassl compatibility; no effect
_C.DATASET.NUM_SHOTS = -1  # K images per class for training (val: min(K, 4)); 0 or -1: all
_C.DATASET.VAL_PERCENT = 0.1  # val share of Dassl's CIFAR/STL splits; kept for Dassl compatibility; no effect
_C.DATASET.STL10_FOLD = -1  # STL-10 fold; kept for Dassl compatibility; no effect
_C.DATASET.CIFAR_C_TYPE = ""  # CIFAR-C corruption; kept for Dassl compatibility; no effect
_C.DATASET.CIFAR_C_LEVEL = 1  # CIFAR-C corruption level; kept for Dassl compatibility; no effect
_C.DATASET.ALL_AS_UNLABELED = False  # labelled data also as unlabelled; kept for Dassl compatibility; no effect
_C.DATASET.SUBSAMPLE_CLASSES = "all"  # all | base | new (base-to-new generalisation)
_C.DATASET.TASKS = []  # subset of a suite's tasks, by name or 0-based index; [] = all
# True in a suite's dataset config (several tasks trained jointly). It changes no
# computation; method recipes read it to pick a schedule (e.g. 50 epochs on a suite
# instead of 50/100/200 by shots, as the multi-task papers run their baselines).
_C.DATASET.SUITE = False

###########################
# Dataloader
###########################
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4  # loader processes (0: load in the main process)
_C.DATALOADER.K_TRANSFORMS = 1  # augmented views per training image (img, img2, ...)
_C.DATALOADER.RETURN_IMG0 = False  # also return the un-augmented image as img0
_C.DATALOADER.TRAIN_X = CN()
# RandomSampler | SequentialSampler | TaskGroupedBatchSampler (each batch from one task)
_C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32  # training batch size (1 or more)
_C.DATALOADER.TRAIN_X.N_DOMAIN = 0  # Dassl's RandomDomainSampler; kept for Dassl compatibility; no effect
_C.DATALOADER.TRAIN_X.N_INS = 16  # Dassl's RandomClassSampler; kept for Dassl compatibility; no effect
# Unlabelled data of Dassl's semi-supervised and domain-adaptation trainers (none here)
_C.DATALOADER.TRAIN_U = CN()
_C.DATALOADER.TRAIN_U.SAME_AS_X = True  # kept for Dassl compatibility; no effect
_C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"  # kept for Dassl compatibility; no effect
_C.DATALOADER.TRAIN_U.BATCH_SIZE = 32  # kept for Dassl compatibility; no effect
_C.DATALOADER.TRAIN_U.N_DOMAIN = 0  # kept for Dassl compatibility; no effect
_C.DATALOADER.TRAIN_U.N_INS = 16  # kept for Dassl compatibility; no effect
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.SAMPLER = "SequentialSampler"  # val/test order
_C.DATALOADER.TEST.BATCH_SIZE = 32  # val/test batch size (1 or more)

###########################
# Model
###########################
_C.MODEL = CN()
_C.MODEL.INIT_WEIGHTS = ""  # weights for a Dassl backbone; kept for Dassl compatibility; no effect
# Run folders whose trainable weights (best-val checkpoint, else the last) initialise this
# run, averaged over the folders (MVLPT's source-to-target prompt initialisation; see
# trainers/transfer_init.py and tools/transfer.py). []: none.
_C.MODEL.INIT_FROM = []
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = ""  # registered backbone (python tools/backbones.py): rn50, vit_b16, open_clip:ViT-B-32, tiny_vit, ...
_C.MODEL.BACKBONE.PRETRAINED = ""  # OpenCLIP weights tag (e.g. laion2b_s34b_b79k)
_C.MODEL.BACKBONE.PATH = ""  # local weights file; overrides the clip cache / PRETRAINED
# The activation the plain state dict in PATH was trained with: quick_gelu (OpenAI-style
# CLIPs: rn50, vit_b16, tiny_vit, ...) or gelu (most OpenCLIP models). Only asked for when
# the file's architecture is registered with both (e.g. tiny_vit and open_clip:tiny-ViT),
# since the weights cannot tell; it must fit MODEL.BACKBONE.NAME. "" = not given.
_C.MODEL.BACKBONE.ACTIVATION = ""
# Dassl's classification head (CLIP trainers classify with text features instead)
_C.MODEL.HEAD = CN()
_C.MODEL.HEAD.NAME = ""  # kept for Dassl compatibility; no effect
_C.MODEL.HEAD.HIDDEN_LAYERS = ()  # kept for Dassl compatibility; no effect
_C.MODEL.HEAD.ACTIVATION = "relu"  # kept for Dassl compatibility; no effect
_C.MODEL.HEAD.BN = True  # kept for Dassl compatibility; no effect
_C.MODEL.HEAD.DROPOUT = 0.0  # kept for Dassl compatibility; no effect

###########################
# Optimization
###########################
_C.OPTIM = CN()
_C.OPTIM.NAME = "adam"  # adam | amsgrad | sgd | rmsprop (the prompt-tuning recipes set sgd)
_C.OPTIM.LR = 0.0003  # base learning rate (0 or more)
_C.OPTIM.WEIGHT_DECAY = 5e-4  # L2 weight decay
_C.OPTIM.MOMENTUM = 0.9  # sgd and rmsprop momentum
_C.OPTIM.SGD_DAMPNING = 0  # sgd dampening (Dassl's spelling)
_C.OPTIM.SGD_NESTEROV = False  # sgd: Nesterov momentum
_C.OPTIM.RMSPROP_ALPHA = 0.99  # rmsprop smoothing constant
_C.OPTIM.ADAM_BETA1 = 0.9  # adam/amsgrad beta1
_C.OPTIM.ADAM_BETA2 = 0.999  # adam/amsgrad beta2
_C.OPTIM.STAGED_LR = False  # True: NEW_LAYERS at LR, the other layers at LR * BASE_LR_MULT
_C.OPTIM.NEW_LAYERS = ()  # child-module names trained at the full LR (STAGED_LR)
_C.OPTIM.BASE_LR_MULT = 0.1  # LR multiplier of the other layers (STAGED_LR)
_C.OPTIM.LR_SCHEDULER = "single_step"  # single_step | multi_step | cosine
_C.OPTIM.STEPSIZE = (-1,)  # step schedules: epochs at which the LR is multiplied by GAMMA
_C.OPTIM.GAMMA = 0.1  # step schedules: LR factor
_C.OPTIM.MAX_EPOCH = 10  # training epochs (0 or more)
_C.OPTIM.WARMUP_EPOCH = -1  # warm-up epochs before the schedule; <=0: no warm-up
_C.OPTIM.WARMUP_TYPE = "linear"  # constant | linear
_C.OPTIM.WARMUP_CONS_LR = 1e-5  # constant warm-up: its LR
_C.OPTIM.WARMUP_MIN_LR = 1e-5  # linear warm-up: the starting LR
_C.OPTIM.WARMUP_RECOUNT = True  # True: the schedule counts epochs from the end of the warm-up

###########################
# Train
###########################
_C.TRAIN = CN()
_C.TRAIN.CHECKPOINT_FREQ = 0  # save every N epochs (0: only at the end)
_C.TRAIN.CHECKPOINT_KEEP = 0  # keep only the newest N epoch checkpoints (0: keep all)
_C.TRAIN.PRINT_FREQ = 10  # log every N batches (1 or more)
_C.TRAIN.COUNT_ITER = "train_x"  # Dassl: the loader that sets the batches per epoch; kept for Dassl compatibility; no effect

###########################
# Test
###########################
_C.TEST = CN()
_C.TEST.EVALUATOR = "Classification"  # registered evaluator (per-task classification)
_C.TEST.PER_CLASS_RESULT = False  # also print each class's accuracy
_C.TEST.COMPUTE_CMAT = False  # Dassl: save a confusion matrix; kept for Dassl compatibility; no effect
_C.TEST.NO_TEST = False  # True: no evaluation after training (no results.json)
_C.TEST.SPLIT = "test"  # test | val: the split tested after training and by --eval-only
_C.TEST.FINAL_MODEL = "last_step"  # last_step | best_val: the model tested after training

###########################
# Feature cache
###########################
# Frozen image features on disk, shared by every method, seed and shot count
# (toolbox/features). Keyed by backbone name + weights hash, image file (path,
# size, mtime), evaluation transform, precision and device kind, so a stale
# feature is never reused. Remove the folder (or `python tools/cache.py prune`)
# to clear it.
_C.FEATURE_CACHE = CN()
_C.FEATURE_CACHE.ENABLED = True  # False: encode every image at every evaluation
# "" = <DATASET.ROOT>/.feature_cache, or the user's cache folder
# ($XDG_CACHE_HOME or ~/.cache)/clip_feature_cache when the data root is read-only
_C.FEATURE_CACHE.DIR = ""
# N > 0: training reads frozen features too. N augmented views of every training image
# (the run's own training transform, seeded per image, view and --seed) are encoded once
# (and kept in the cache); each epoch draws one view per image (seeded per epoch). Much
# faster epochs, at the price of N fixed augmentations instead of a fresh one per epoch:
# this changes what a run computes (part of the config digest). 0: train on images.
# Needs a fixed seed and a trainer that trains on image features (every CLIP prompt
# trainer here); no effect for a trainer that trains nothing on images (zero-shot, linear probe).
_C.FEATURE_CACHE.TRAIN_VIEWS = 0

###########################
# Trainer
###########################
_C.TRAINER = CN()
_C.TRAINER.NAME = ""  # registered trainer (train.py's --trainer); options in TRAINER.<NAME>

# The keys above marked NO_EFFECT: accepted, never read (a group prefix ends in ".").
NO_EFFECT_KEYS = (
    "VERSION", "MODEL.HEAD.", "MODEL.INIT_WEIGHTS",
    "TEST.COMPUTE_CMAT", "TRAIN.COUNT_ITER", "DATASET.SOURCE_DOMAINS", "DATASET.TARGET_DOMAINS",
    "DATASET.VAL_PERCENT", "DATASET.NUM_LABELED", "DATASET.STL10_FOLD", "DATASET.CIFAR_C_TYPE",
    "DATASET.CIFAR_C_LEVEL", "DATASET.ALL_AS_UNLABELED", "INPUT.RANDAUGMENT_N",
    "INPUT.RANDAUGMENT_M", "DATALOADER.TRAIN_U.", "DATALOADER.TRAIN_X.N_DOMAIN",
    "DATALOADER.TRAIN_X.N_INS",
)
_warned = set()


def no_effect_keys_set(cfg):
    """The NO_EFFECT keys ``cfg`` sets to something other than their default."""
    default = dict(_leaves(_C))
    out = []
    for key, value in _leaves(cfg):
        if any(key == k or (k.endswith(".") and key.startswith(k)) for k in NO_EFFECT_KEYS):
            if key in default and _norm(value) != _norm(default[key]):
                out.append(key)
    return out


def warn_no_op_keys(cfg):
    """Warn once per process for each NO_EFFECT key the user set."""
    for key in no_effect_keys_set(cfg):
        if key not in _warned:
            _warned.add(key)
            warnings.warn(f"{key} is {NO_EFFECT} (see toolbox/config.py)", stacklevel=2)


def check_cfg_values(cfg):
    """UserError for values no run can use (checked once, after merging)."""
    def at_least(key, value, low, what):
        if value < low:
            raise UserError(f"{key} must be {what}, got {value}")

    at_least("DATALOADER.TRAIN_X.BATCH_SIZE", cfg.DATALOADER.TRAIN_X.BATCH_SIZE, 1, "1 or more")
    at_least("DATALOADER.TEST.BATCH_SIZE", cfg.DATALOADER.TEST.BATCH_SIZE, 1, "1 or more")
    at_least("DATALOADER.NUM_WORKERS", cfg.DATALOADER.NUM_WORKERS, 0, "0 or more")
    at_least("FEATURE_CACHE.TRAIN_VIEWS", cfg.FEATURE_CACHE.TRAIN_VIEWS, 0,
             "0 (train on images) or a number of views per training image")
    at_least("OPTIM.MAX_EPOCH", cfg.OPTIM.MAX_EPOCH, 0, "0 or more")
    at_least("OPTIM.LR", cfg.OPTIM.LR, 0, "0 or more")
    at_least("TRAIN.PRINT_FREQ", cfg.TRAIN.PRINT_FREQ, 1, "1 or more")
    at_least("DATASET.NUM_SHOTS", cfg.DATASET.NUM_SHOTS, -1,
             "a number of images per class (1 or more), or 0 / -1 for all images")
    check_choice("DATASET.SUBSAMPLE_CLASSES", cfg.DATASET.SUBSAMPLE_CLASSES, ("all", "base", "new"))
    check_choice("MODEL.BACKBONE.ACTIVATION", cfg.MODEL.BACKBONE.ACTIVATION,
                 ("", "quick_gelu", "gelu"))
    check_choice("TEST.SPLIT", cfg.TEST.SPLIT, ("test", "val"))
    check_choice("TEST.FINAL_MODEL", cfg.TEST.FINAL_MODEL, ("last_step", "best_val"))


def get_cfg_default():
    return _C.clone()


# Keys that say where a run reads or writes, how much it prints or how often it
# saves, not what it computes: left out of the config digest, so a run is
# recognised as the same run after its data folder moved, when it is resumed
# (RESUME), re-run verbose or with other checkpoint settings.
DIGEST_IGNORED_KEYS = ("OUTPUT_DIR", "RESUME", "DATASET.ROOT", "VERBOSE",
                       "TRAIN.CHECKPOINT_FREQ", "TRAIN.CHECKPOINT_KEEP")
# DATASET.SUITE only tells scripts which schedule to pick.
DIGEST_IGNORED_KEYS += ("DATASET.SUITE",)
# The feature cache changes where features come from, not what they are.
DIGEST_IGNORED_KEYS += ("FEATURE_CACHE.ENABLED", "FEATURE_CACHE.DIR")
# Printing does not change what is computed either.
DIGEST_IGNORED_KEYS += ("TRAIN.PRINT_FREQ",)


# ---- run identity -------------------------------------------------------------------
# A run is identified by its config digest (results.json, checkpoints, the run-folder
# check, --resume, --eval-only, the grid's skip of finished runs). Adding a config key
# must not change the identity of runs made before it existed, while a key's value
# (or a changed default) that computes something else must. The rule:
#
#   the digest covers every key, except that a key with a declared NEUTRAL VALUE is
#   left out while it holds that value.
#
# The neutral value of a key is the value that computes exactly what runs made before
# the key existed computed (usually its default when it is added). It is declared once,
# when the key is added, and never changed afterwards: a later change of the key's
# default then gives new runs a new digest, as it should. Keys of the identity baseline
# (identity_baseline.json: every key when this rule was introduced) need no declaration;
# every key added since must have one (tests/test_config_identity.py fails naming the
# key otherwise). A plugin trainer declares its keys with ``declare_neutral`` in its
# extend_cfg; an undeclared key simply counts (a new digest, never a false "same run").
# Before this rule the digest covered every key: with no key at its neutral value left
# to drop, it is the same formula, so every existing digest stays as it was
# (tests/data/trainer_config_digests.json pins them).
IDENTITY_BASELINE = osp.join(osp.dirname(osp.abspath(__file__)), "identity_baseline.json")

# key: neutral value (keys added after the identity baseline, or before it and then
# treated so, as FEATURE_CACHE.TRAIN_VIEWS was from its start).
NEUTRAL_VALUES = {
    "FEATURE_CACHE.TRAIN_VIEWS": 0,  # 0: train on images, as every run before it
    "MODEL.BACKBONE.ACTIVATION": "",  # "": the activation the backbone name implies
    "MODEL.INIT_FROM": [],  # []: no initialisation from other runs
}


def declare_neutral(key, value):
    """Declare the neutral value of config key ``key`` (``"TRAINER.MYNET.DEPTH"``):
    left out of the digest while it holds ``value``. ``value`` may be a CfgNode
    group (``declare_neutral("TRAINER.MYNET", cfg.TRAINER.MYNET)`` in an extend_cfg):
    each of its keys with its current value. A second declaration of a key with
    another value is a programming error (it would change existing digests)."""
    items = ([(f"{key}.{k}", v) for k, v in _leaves(value)] if isinstance(value, CN)
             else [(key, value)])
    for k, v in items:
        if k in NEUTRAL_VALUES and _norm(NEUTRAL_VALUES[k]) != _norm(v):
            raise ValueError(f"{k} already has the neutral value {NEUTRAL_VALUES[k]!r}; a "
                             f"second one ({v!r}) would change the digests of existing runs")
        NEUTRAL_VALUES[k] = v


def identity_baseline_keys():
    with open(IDENTITY_BASELINE) as f:
        return set(json.load(f)["keys"])


def _openai_canonical(name):
    """MODEL.BACKBONE.NAME holds clip's spelling for OpenAI models ("ViT-B/32", what
    upstream trainers look up in clip._MODELS); digests were made with the canonical
    name ("vit_b32") and keep it."""
    try:
        from trainers.backbones import OPENAI_MODELS
    except ImportError:  # the toolbox without the CLIP trainers: nothing to map
        return name
    for canon, (clip_name, _) in OPENAI_MODELS.items():
        if name == clip_name:
            return canon
    return name


def canonical_backbone(cfg):
    """The canonical backbone name of ``cfg`` (results.json, folders, tables), whatever
    spelling MODEL.BACKBONE.NAME holds (trainers.backbones.canonical_name does the same
    and knows every alias)."""
    return _openai_canonical(str(cfg.MODEL.BACKBONE.NAME))


def _node_of(c, key):
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.get(p) if isinstance(node, CN) else None
    return (node, leaf) if isinstance(node, CN) and leaf in node else (None, leaf)


def _declarations():
    """Make sure every trainer's neutral-value declarations ran (they are made when
    the default config is built)."""
    try:
        from .config_pipeline import ensure_declarations

        ensure_declarations()
    except ImportError:  # the toolbox without the trainers package: nothing declared
        pass


def identity_cfg(cfg):
    """The config as its digest sees it: ignored keys blanked, keys at their neutral
    value removed (and groups left empty by that), the canonical backbone name."""
    _declarations()
    c = cfg.clone()
    c.defrost()
    for key in DIGEST_IGNORED_KEYS:
        node, leaf = _node_of(c, key)
        if node is not None:
            node[leaf] = ""
    for key, value in NEUTRAL_VALUES.items():
        node, leaf = _node_of(c, key)
        if node is not None and _norm(node[leaf]) == _norm(value):
            del node[leaf]
            _drop_empty_parents(c, key)
    node, leaf = _node_of(c, "MODEL.BACKBONE.NAME")
    if node is not None:
        node[leaf] = _openai_canonical(node[leaf])
    return c


def _drop_empty_parents(c, key):
    parts = key.split(".")[:-1]
    while parts:
        node, leaf = _node_of(c, ".".join(parts))
        if node is None or not isinstance(node[leaf], CN) or len(node[leaf]):
            return
        del node[leaf]
        parts.pop()


def config_digest(cfg):
    """16 hex digits identifying what a config computes (results.json's
    ``config_digest``; tools/grid.py skips a run whose digest matches)."""
    return hashlib.sha256(identity_cfg(cfg).dump().encode()).hexdigest()[:16]


def _norm(v):
    """Tuples and lists compare equal (a YAML dump turns tuples into lists)."""
    return [_norm(x) for x in v] if isinstance(v, (list, tuple)) else v


def _leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, CN):
            yield from _leaves(v, prefix + k + ".")
        else:
            yield prefix + k, v


def config_diff(saved, cfg):
    """[(key, saved value, value in cfg), ...] for the keys (outside
    DIGEST_IGNORED_KEYS) where ``saved`` (a config dump, e.g. from a
    checkpoint) and ``cfg`` differ; a key only one side has counts too."""
    try:
        other = CN.load_cfg(saved)
    except Exception:  # an unreadable dump: no details, the digest still differs
        return []
    a = {k: _norm(v) for k, v in _leaves(identity_cfg(other))}
    b = {k: _norm(v) for k, v in _leaves(identity_cfg(cfg))}
    keys = [k for k in list(b) + [k for k in a if k not in b] if k not in DIGEST_IGNORED_KEYS]
    missing = "(unset)"
    for key, value in NEUTRAL_VALUES.items():  # unset there = its neutral value here
        for side in (a, b):
            side.setdefault(key, _norm(value))
    return [(k, a.get(k, missing), b.get(k, missing)) for k in keys
            if a.get(k, missing) != b.get(k, missing)]
