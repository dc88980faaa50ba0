"""All default config keys, as in Dassl's ``dassl.config.defaults``.

Keys that CoOp-style code reads keep Dassl's names and defaults. Trainer-
specific groups (TRAINER.COOP, ...) are added by ``trainers.extend_cfg``.
"""
import hashlib

from yacs.config import CfgNode as CN

_C = CN()

_C.VERSION = 1
_C.OUTPUT_DIR = "./output"  # logs, checkpoints, results.json
_C.RESUME = ""  # folder to resume from (train.py's --resume)
_C.SEED = -1  # <0: no fixed seed
_C.USE_CUDA = True
_C.VERBOSE = True

###########################
# Input
###########################
_C.INPUT = CN()
_C.INPUT.SIZE = ()  # () = the backbone's (trainers/backbones.py; Dassl: (224, 224))
_C.INPUT.INTERPOLATION = ""  # "" = the backbone's (CLIP: bicubic; Dassl: bilinear)
_C.INPUT.TRANSFORMS = ()  # e.g. ("random_resized_crop", "random_flip", "normalize")
_C.INPUT.NO_TRANSFORM = False
_C.INPUT.PIXEL_MEAN = []  # [] = the backbone's (Dassl: ImageNet's [0.485, 0.456, 0.406])
_C.INPUT.PIXEL_STD = []  # [] = the backbone's (Dassl: [0.229, 0.224, 0.225])
_C.INPUT.CROP_PADDING = 4
_C.INPUT.RRCROP_SCALE = (0.08, 1.0)
_C.INPUT.CUTOUT_N = 1
_C.INPUT.CUTOUT_LEN = 16
_C.INPUT.GN_MEAN = 0.0
_C.INPUT.GN_STD = 0.15
_C.INPUT.RANDAUGMENT_N = 2
_C.INPUT.RANDAUGMENT_M = 10
_C.INPUT.COLORJITTER_B = 0.4
_C.INPUT.COLORJITTER_C = 0.4
_C.INPUT.COLORJITTER_S = 0.4
_C.INPUT.COLORJITTER_H = 0.1
_C.INPUT.RGS_P = 0.2
_C.INPUT.GB_P = 0.5
_C.INPUT.GB_K = 21

###########################
# Dataset
###########################
_C.DATASET = CN()
_C.DATASET.ROOT = ""  # folder holding all datasets ($DATA)
_C.DATASET.NAME = ""  # registered dataset or suite name
_C.DATASET.SOURCE_DOMAINS = ()
_C.DATASET.TARGET_DOMAINS = ()
_C.DATASET.NUM_LABELED = -1
_C.DATASET.NUM_SHOTS = -1  # K images per class for training; <1: all
_C.DATASET.VAL_PERCENT = 0.1
_C.DATASET.STL10_FOLD = -1
_C.DATASET.CIFAR_C_TYPE = ""
_C.DATASET.CIFAR_C_LEVEL = 1
_C.DATASET.ALL_AS_UNLABELED = False
_C.DATASET.SUBSAMPLE_CLASSES = "all"  # all | base | new (CoOp's base-to-new)
_C.DATASET.TASKS = []  # subset of a suite's tasks, by name or 0-based index; [] = all

###########################
# Dataloader
###########################
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.K_TRANSFORMS = 1
_C.DATALOADER.RETURN_IMG0 = False
_C.DATALOADER.TRAIN_X = CN()
_C.DATALOADER.TRAIN_X.SAMPLER = "RandomSampler"  # or TaskGroupedBatchSampler
_C.DATALOADER.TRAIN_X.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_X.N_DOMAIN = 0
_C.DATALOADER.TRAIN_X.N_INS = 16
_C.DATALOADER.TRAIN_U = CN()
_C.DATALOADER.TRAIN_U.SAME_AS_X = True
_C.DATALOADER.TRAIN_U.SAMPLER = "RandomSampler"
_C.DATALOADER.TRAIN_U.BATCH_SIZE = 32
_C.DATALOADER.TRAIN_U.N_DOMAIN = 0
_C.DATALOADER.TRAIN_U.N_INS = 16
_C.DATALOADER.TEST = CN()
_C.DATALOADER.TEST.SAMPLER = "SequentialSampler"
_C.DATALOADER.TEST.BATCH_SIZE = 32

###########################
# Model
###########################
_C.MODEL = CN()
_C.MODEL.INIT_WEIGHTS = ""
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = ""  # registered backbone (python tools/backbones.py): rn50, vit_b16, open_clip:ViT-B-32, tiny_vit, ...
_C.MODEL.BACKBONE.PRETRAINED = ""  # OpenCLIP weights tag (e.g. laion2b_s34b_b79k)
_C.MODEL.BACKBONE.PATH = ""  # local weights file; overrides the clip cache / PRETRAINED
_C.MODEL.HEAD = CN()
_C.MODEL.HEAD.NAME = ""
_C.MODEL.HEAD.HIDDEN_LAYERS = ()
_C.MODEL.HEAD.ACTIVATION = "relu"
_C.MODEL.HEAD.BN = True
_C.MODEL.HEAD.DROPOUT = 0.0

###########################
# Optimization
###########################
_C.OPTIM = CN()
_C.OPTIM.NAME = "adam"  # CoOp configs set sgd
_C.OPTIM.LR = 0.0003
_C.OPTIM.WEIGHT_DECAY = 5e-4
_C.OPTIM.MOMENTUM = 0.9
_C.OPTIM.SGD_DAMPNING = 0
_C.OPTIM.SGD_NESTEROV = False
_C.OPTIM.RMSPROP_ALPHA = 0.99
_C.OPTIM.ADAM_BETA1 = 0.9
_C.OPTIM.ADAM_BETA2 = 0.999
_C.OPTIM.STAGED_LR = False
_C.OPTIM.NEW_LAYERS = ()
_C.OPTIM.BASE_LR_MULT = 0.1
_C.OPTIM.LR_SCHEDULER = "single_step"  # single_step | multi_step | cosine
_C.OPTIM.STEPSIZE = (-1,)
_C.OPTIM.GAMMA = 0.1
_C.OPTIM.MAX_EPOCH = 10
_C.OPTIM.WARMUP_EPOCH = -1  # <=0: no warm-up
_C.OPTIM.WARMUP_TYPE = "linear"  # constant | linear
_C.OPTIM.WARMUP_CONS_LR = 1e-5
_C.OPTIM.WARMUP_MIN_LR = 1e-5
_C.OPTIM.WARMUP_RECOUNT = True

###########################
# Train
###########################
_C.TRAIN = CN()
_C.TRAIN.CHECKPOINT_FREQ = 0  # save every N epochs (0: only at the end)
_C.TRAIN.CHECKPOINT_KEEP = 0  # keep only the newest N epoch checkpoints (0: keep all)
_C.TRAIN.PRINT_FREQ = 10  # log every N batches
_C.TRAIN.COUNT_ITER = "train_x"

###########################
# Test
###########################
_C.TEST = CN()
_C.TEST.EVALUATOR = "Classification"
_C.TEST.PER_CLASS_RESULT = False
_C.TEST.COMPUTE_CMAT = False
_C.TEST.NO_TEST = False
_C.TEST.SPLIT = "test"  # test | val
_C.TEST.FINAL_MODEL = "last_step"  # last_step | best_val

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

###########################
# Trainer
###########################
_C.TRAINER = CN()
_C.TRAINER.NAME = ""


def get_cfg_default():
    return _C.clone()


# Keys that say where a run reads or writes, how much it prints or how often it
# saves, not what it computes: left out of the config digest, so a run is
# recognised as the same run after its data folder moved, when it is resumed
# (RESUME), re-run verbose or with other checkpoint settings.
DIGEST_IGNORED_KEYS = ("OUTPUT_DIR", "RESUME", "DATASET.ROOT", "VERBOSE",
                       "TRAIN.CHECKPOINT_FREQ", "TRAIN.CHECKPOINT_KEEP")
# The feature cache changes where features come from, not what they are.
DIGEST_IGNORED_KEYS += ("FEATURE_CACHE.ENABLED", "FEATURE_CACHE.DIR")


def config_digest(cfg):
    """16 hex digits identifying what a config computes (results.json's
    ``config_digest``; tools/grid.py skips a run whose digest matches)."""
    c = cfg.clone()
    c.defrost()
    for key in DIGEST_IGNORED_KEYS:
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.get(p) if isinstance(node, CN) else None
        if isinstance(node, CN) and leaf in node:
            node[leaf] = ""
    return hashlib.sha256(c.dump().encode()).hexdigest()[:16]
