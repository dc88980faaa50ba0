"""The one way a run's config is built: defaults, every trainer's config group, the
dataset config, the trainer config, train.py's flags, KEY VALUE overrides, then the
backbone's input defaults and the value checks.

    cfg = setup_cfg(get_parser().parse_args(argv))   # train.py
    cfg = cfg_from_argv(["--trainer", TRAINER, "--config-file", f, "OPTIM.MAX_EPOCH", "1"])

train.py, tools/check_data.py, tools/cache.py, tools/bench.py and the tests build their
configs here, so a config (and its digest) is the same whichever tool built it.
"""
import argparse
import os

import yaml

from .config import check_cfg_values, get_cfg_default
from .errors import UserError, one_line, yaml_error

_DECLARED = False


def get_parser(description="Train or evaluate a trainer on a dataset (flags as in the "
                            "Dassl-based upstream train.py)."):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--root", type=str, default="", help="path to the datasets ($DATA)")
    p.add_argument("--output-dir", type=str, default="", help="output directory")
    p.add_argument("--resume", type=str, nargs="?", const="__output_dir__", default="",
                   help="resume from the last checkpoint in this folder (default: --output-dir)")
    p.add_argument("--seed", type=int, default=None,
                   help="fixed seed (0 or more); -1 or none: unseeded (as SEED in the config)")
    p.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    p.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    p.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    p.add_argument("--config-file", type=str, default="", help="path to trainer config file")
    p.add_argument("--dataset-config-file", type=str, default="", help="path to dataset config")
    p.add_argument("--trainer", type=str, default="", help="name of trainer")
    p.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    p.add_argument("--head", type=str, default="", help="name of head")
    p.add_argument("--eval-only", action="store_true", help="evaluation only")
    p.add_argument("--model-dir", type=str, default="", help="load model from this directory")
    p.add_argument("--load-epoch", type=int, help="load model weights at this epoch")
    p.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    p.add_argument("--verbose", action="store_true",
                   help="print the full config and system info (always in <output>/config.yaml)")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                   help="modify config options using the command-line (KEY VALUE ...)")
    return p


def reset_cfg(cfg, args):
    """train.py's flags into the config (as the Dassl-based upstream train.py does)."""
    if getattr(args, "root", ""):
        cfg.DATASET.ROOT = args.root
    if getattr(args, "output_dir", ""):
        cfg.OUTPUT_DIR = args.output_dir
    if getattr(args, "resume", ""):
        cfg.RESUME = cfg.OUTPUT_DIR if args.resume == "__output_dir__" else args.resume
    if getattr(args, "seed", None) is not None:
        cfg.SEED = args.seed
    if getattr(args, "source_domains", None):
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if getattr(args, "target_domains", None):
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if getattr(args, "transforms", None):
        cfg.INPUT.TRANSFORMS = args.transforms
    if getattr(args, "trainer", ""):
        cfg.TRAINER.NAME = args.trainer
    if getattr(args, "backbone", ""):
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if getattr(args, "head", ""):
        cfg.MODEL.HEAD.NAME = args.head


def merge(what, fn):
    """Run a yacs merge; turn its errors into one actionable line."""
    try:
        try:
            fn()
        except AssertionError as e:  # yacs reports unknown command-line keys this way
            if "Non-existent key" not in str(e):
                raise
            raise KeyError(str(e).split("Non-existent key: ", 1)[1]) from None
    except UserError:
        raise
    except KeyError as e:
        key = str(e).strip("'\"").replace("Non-existent config key: ", "")
        raise UserError(f"unknown config key '{key}' in {what}; check its spelling against "
                        "toolbox/config.py and the TRAINER groups in trainers/*.py") from None
    except (ValueError, AssertionError, TypeError) as e:
        raise UserError(f"bad config value in {what}: {one_line(e)}") from None
    except FileNotFoundError as e:
        raise UserError(f"config file not found: {e.filename}") from None
    except yaml.YAMLError as e:  # malformed YAML: say where
        raise yaml_error(what, e) from None


def split_resume(args):
    """``--resume`` takes an optional folder, so argparse reads the first
    override key after a bare ``--resume`` as that folder: give it back."""
    looks_like_key = (args.resume and args.resume != "__output_dir__"
                      and not os.path.exists(args.resume)
                      and "." in args.resume and args.resume.split(".")[0].isupper()
                      and args.resume.replace(".", "").replace("_", "").isalnum())
    if looks_like_key:
        args.opts = [args.resume] + list(args.opts or [])
        args.resume = "__output_dir__"
    return args


def base_cfg():
    """Defaults plus every trainer's TRAINER.<NAME> group (a dataset config may set
    trainer keys: the demo's CTX_INIT), not frozen."""
    import datasets  # noqa: F401  (registers the datasets)
    import trainers

    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    return cfg


def default_config():
    """The full default config (frozen): every key a run's config has."""
    cfg = base_cfg()
    cfg.freeze()
    return cfg


def ensure_declarations():
    """Run every trainer's extend_cfg once in this process, so that the neutral values
    they declare (toolbox.config.declare_neutral) are known to config_digest even
    where no config was built yet (a digest of a saved config.yaml)."""
    global _DECLARED
    if not _DECLARED:
        _DECLARED = True
        base_cfg()


def setup_cfg(args, backbone=True):
    """The frozen config of train.py's parsed ``args``. ``backbone=False`` leaves
    MODEL.BACKBONE.NAME as given and the INPUT defaults unfilled (tools/check_data.py
    reports a backbone problem instead of stopping at it)."""
    from trainers.backbones import fill_input_defaults

    split_resume(args)
    cfg = base_cfg()
    if args.dataset_config_file:
        merge(args.dataset_config_file, lambda: cfg.merge_from_file(args.dataset_config_file))
    if args.config_file:
        merge(args.config_file, lambda: cfg.merge_from_file(args.config_file))
    reset_cfg(cfg, args)
    opts = list(args.opts or [])
    if opts and opts[0] == "--":
        opts = opts[1:]
    merge("the command-line options", lambda: cfg.merge_from_list(opts))
    if backbone:
        # the backbone's spelling upstream code expects; INPUT defaults from the backbone
        fill_input_defaults(cfg)
    check_cfg_values(cfg)
    cfg.freeze()
    return cfg


def cfg_from_argv(argv, backbone=True):
    """``setup_cfg`` of a train.py command line given as a list (flags, then KEY VALUE
    pairs), e.g. ``["--trainer", TRAINER, "--config-file", path, "OPTIM.LR", "0.01"]``."""
    return setup_cfg(get_parser().parse_args([str(a) for a in argv]), backbone=backbone)
