"""Check that the data a dataset config needs is in place, task by task.

    python tools/check_data.py --root $DATA --dataset-config-file configs/datasets/fewshot44.yaml

Prints, per task, whether its data was found, the images per split (full
splits, no few-shot draw) and the class count; for a missing task the exact
path it expects and the DATASETS.md section that explains the layout. Exits
1 if any task is missing or broken, 2 on a bad command line. Missing
datasets are never opened, so nothing is written into their folders.
"""
import argparse
import contextlib
import io
import os.path as osp
import sys
import warnings

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import yaml  # noqa: E402

import datasets  # noqa: E402,F401  (registers the datasets)
from tabulate import tabulate  # noqa: E402
from toolbox.config import get_cfg_default  # noqa: E402
from toolbox.data.datasets.check import check_data  # noqa: E402
from toolbox.errors import UserError, one_line, yaml_error  # noqa: E402


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="path to the datasets ($DATA)")
    p.add_argument("--dataset-config-file",
                   default=osp.join(ROOT, "configs/datasets/fewshot44.yaml"),
                   help="dataset or suite config (default: FewShot44, all 44 tasks)")
    p.add_argument("--paths-only", action="store_true",
                   help="only check paths; do not read the found datasets to count images")
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="config overrides, e.g. DATASET.TASKS [0,3]")
    return p


def setup_cfg(args):
    cfg = get_cfg_default()
    try:
        cfg.merge_from_file(args.dataset_config_file)
        cfg.merge_from_list(list(args.opts or []))
    except FileNotFoundError as e:
        raise UserError(f"config file not found: {e.filename}") from None
    except yaml.YAMLError as e:
        raise yaml_error(args.dataset_config_file, e) from None
    except (KeyError, ValueError, AssertionError, TypeError) as e:
        raise UserError(f"bad dataset config {args.dataset_config_file}: {one_line(e)}") from None
    cfg.DATASET.ROOT = args.root
    cfg.DATASET.NUM_SHOTS = 0  # full splits; no few-shot cache is written
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    cfg.freeze()
    return cfg


def count_task(check, cfg):
    """(train, val, test, classes) of a found task, read quietly."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = check.cls(cfg)
    return len(ds.train_x or []), len(ds.val or []), len(ds.test or []), ds.num_classes


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        cfg = setup_cfg(args)
        checks = check_data(cfg)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    rows, notes, n_bad = [], [], 0
    for c in checks:
        counts = ["-"] * 4
        status = "found"
        if not c.ok:
            status = "error" if c.error else "missing"
            notes.append(f"{c.name}: {c.message()}")
        elif not args.paths_only:
            try:
                counts = list(count_task(c, cfg))
            except UserError as e:
                status = "error"
                notes.append(f"{c.name}: {one_line(e)}")
        n_bad += status != "found"
        rows.append([c.name, status, *counts])
    print(tabulate(rows, headers=["task", "data", "train", "val", "test", "classes"]))
    for line in notes:
        print(line)
    print(f"{len(checks) - n_bad} of {len(checks)} task(s) ready" +
          (f"; {n_bad} missing or broken (see DATASETS.md)" if n_bad else ""))
    return 1 if n_bad else 0


if __name__ == "__main__":
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    sys.exit(main())
