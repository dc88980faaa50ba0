"""Check that the data (and the backbone weights) a config needs are in place.

    python tools/check_data.py --root $DATA --dataset-config-file configs/datasets/fewshot44.yaml \
        --config-file configs/trainers/<Trainer>/rn50_ep50.yaml [--verify-images] [--write-splits]
    python tools/check_data.py --root $DATA --dataset-config-file configs/datasets/general10.yaml \
        --method METHOD [--backbone rn50] [--shots 16]   # the weights its recipe needs

Prints, per task, whether its data was found, the images per split (full
splits, no few-shot draw) and the class count; then every missing path, once
per path with the tasks that need it and the DATASETS.md section that explains
the layout; the optional files (split files a first run builds from the
images); the backbone weights of the trainer config (or --backbone); and
"N of M tasks ready". --verify-images opens every image of the found tasks.
Writes nothing unless --write-splits is given (then it saves the split files
it builds). Exits 1 if any task or the weights are missing or broken, 2 on a
bad command line.
"""
import argparse
import contextlib
import io
import os.path as osp
import sys
import warnings
from collections import OrderedDict

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tabulate import tabulate  # noqa: E402
from toolbox.errors import UserError, one_line  # noqa: E402


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", required=True, help="path to the datasets ($DATA)")
    p.add_argument("--dataset-config-file",
                   default=osp.join(ROOT, "configs/datasets/fewshot44.yaml"),
                   help="dataset or suite config (default: FewShot44, all 44 tasks)")
    p.add_argument("--config-file", default="",
                   help="trainer config: also check the backbone weights it needs")
    p.add_argument("--backbone", default="",
                   help="check this backbone's weights (overrides the trainer config's)")
    p.add_argument("--method", default="",
                   help="METHOD[:VARIANT] (python tools/methods.py): check the weights of the "
                   "trainer config its recipe picks for this dataset (and --backbone, --shots), "
                   "as the grid and scripts/main.sh would run it")
    p.add_argument("--shots", type=int, default=16, help="with --method: the shots of the runs "
                   "(recipes may depend on them)")
    p.add_argument("--paths-only", action="store_true",
                   help="only check paths; do not read the found datasets to count images")
    p.add_argument("--verify-images", action="store_true",
                   help="open and decode every image of the found tasks (slow; progress bar)")
    p.add_argument("--write-splits", action="store_true",
                   help="save the split files built for tasks that have none (else nothing is "
                        "written)")
    p.add_argument("opts", nargs=argparse.REMAINDER,
                   help="config overrides, e.g. DATASET.TASKS [0,3]")
    return p


def setup_cfg(args):
    import datasets  # noqa: F401  (registers the datasets)
    from toolbox.config_pipeline import cfg_from_argv

    """The config of train.py's pipeline (toolbox/config_pipeline.py) for these paths
    and overrides, with full splits (no few-shot draw, so no few-shot cache is written);
    the backbone is reported on (backbone_report), not required."""
    argv = ["--root", args.root, "--dataset-config-file", args.dataset_config_file]
    if args.config_file:
        argv += ["--config-file", args.config_file]
    if args.backbone:
        argv += ["--backbone", args.backbone]
    opts = list(args.opts or [])
    if opts and opts[0] == "--":
        opts = opts[1:]
    return cfg_from_argv(argv + opts + ["DATASET.NUM_SHOTS", "0",
                                        "DATASET.SUBSAMPLE_CLASSES", "all"], backbone=False)


def load_task(check, cfg):
    """A found task's dataset, read quietly."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return check.cls(cfg)


def verify_images(ds, name):
    """Paths of the images of ``ds`` that PIL cannot open and decode."""
    from PIL import Image

    from toolbox.utils.progress import progress

    paths = sorted({d.impath for d in (ds.train_x or []) + (ds.val or []) + (ds.test or [])})
    bad = []
    for path in progress(paths, f"verify {name}", unit="img", leave=True):
        try:
            with Image.open(path) as img:
                img.convert("RGB")  # decodes every pixel, not only the header
        except Exception as e:  # noqa: BLE001 - any failure makes the image unusable
            bad.append(f"{path} ({type(e).__name__})")
    return bad


def backbone_report(cfg):
    """(ok, line) for the weights of MODEL.BACKBONE."""
    from trainers import backbones

    b = cfg.MODEL.BACKBONE
    if not b.NAME:
        return True, "backbone weights: the config names no backbone (MODEL.BACKBONE.NAME)"
    try:
        entry = backbones.get_backbone(b.NAME)
        backbones.check_backbone_choice(b.NAME, str(b.PRETRAINED or ""), b.PATH)
        path = backbones.weights_file(b.NAME, str(b.PRETRAINED or ""), b.PATH)
    except UserError as e:
        return False, f"backbone {b.NAME}: {one_line(e)}"
    if path is None:
        if entry.family == "tiny":
            return True, f"backbone {entry.name}: built in (no weights file)"
        if str(b.PRETRAINED or "") == backbones.RANDOM:
            return True, f"backbone {entry.name}: seeded random weights (none to load)"
        return False, (f"backbone {entry.name}: weights {b.PRETRAINED} not in the open_clip "
                       "cache; download them on a machine with internet or set "
                       "MODEL.BACKBONE.PATH")
    if osp.isfile(path):
        return True, f"backbone {entry.name}: weights found at {path}"
    return False, (f"backbone {entry.name}: weights file not found: {path} (downloaded on first "
                   "use when the machine has internet; offline, copy the file there or set "
                   "MODEL.BACKBONE.PATH; see README, 'On a GPU with real weights')")


def group_missing(checks):
    """Missing path -> (tasks needing it, DATASETS.md section), in first-seen order."""
    groups = OrderedDict()
    for c in checks:
        for path in c.missing:
            alt = c.split_file if path in c.split_sources else ""
            tasks, _, _ = groups.setdefault(path, ([], c.section, alt))
            tasks.append(c.name)
    return groups


def tasks_label(tasks):
    return tasks[0] if len(tasks) == 1 else f"{len(tasks)} tasks ({tasks[0]} ... {tasks[-1]})"


def method_config(args):
    """With --method: the trainer config (and backbone overrides) of its recipe for the
    dataset config, as the grid would run it, put into ``args``."""
    from tools.grid_plan import expand

    dataset = osp.splitext(osp.basename(args.dataset_config_file))[0]
    spec = dict(methods=[args.method], datasets=[dataset], shots=[str(args.shots)],
                seeds=["1"])
    if args.backbone:
        spec["backbones"] = [args.backbone]
    run = expand(spec)[0]
    argv = run.argv
    args.config_file = argv[argv.index("--config-file") + 1]
    opts = argv[argv.index("DATASET.NUM_SHOTS") + 2:]
    args.opts = [x for k, v in zip(opts[::2], opts[1::2]) if k.startswith("MODEL.BACKBONE.")
                 for x in (k, v)] + list(args.opts or [])
    args.backbone = ""  # now in the overrides, as the grid passes it
    print(f"Method {args.method}: trainer config {osp.relpath(args.config_file, ROOT)}"
          + (f" with {' '.join(args.opts)}" if args.opts else ""))


def main(argv=None):
    args = get_parser().parse_args(argv)
    # (imported here: --help answers without importing torch)
    from toolbox.data.datasets.check import check_data
    from toolbox.data.datasets.task_dataset import TaskDataset

    try:
        if args.method:
            method_config(args)
        cfg = setup_cfg(args)
        checks = check_data(cfg)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    TaskDataset.save_made_splits = args.write_splits
    rows, notes, n_bad = [], [], 0
    try:
        for c in checks:
            counts = ["-"] * 4
            status = "found"
            if c.error:
                status = "error"
                notes.append(f"{c.name}: {c.error}")
            elif c.missing:
                status = "missing"
            elif not args.paths_only or args.verify_images:
                try:
                    ds = load_task(c, cfg)
                    counts = [len(ds.train_x or []), len(ds.val or []), len(ds.test or []),
                              ds.num_classes]
                    if args.verify_images:
                        bad = verify_images(ds, c.name)
                        if bad:
                            status = "error"
                            notes.append(f"{c.name}: {len(bad)} unreadable image(s): "
                                         + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
                except UserError as e:
                    status = "error"
                    notes.append(f"{c.name}: {one_line(e)}")
            n_bad += status != "found"
            rows.append([c.name, status, *counts])
    finally:
        TaskDataset.save_made_splits = True
    print(tabulate(rows, headers=["task", "data", "train", "val", "test", "classes"]))
    for line in notes:
        print(line)
    groups = group_missing(checks)
    required = [(p, g) for p, g in groups.items() if not g[2]]
    replaceable = [(p, g) for p, g in groups.items() if g[2]]
    for items, head in ((required, "required"),
                        (replaceable, "needed only to build a split: put either these files "
                         "or the split file named there")):
        if items:
            print(f"\nMissing ({len(items)} path(s), {head}):")
        for path, (tasks, section, alt) in items:
            what = "file" if osp.splitext(path)[1] else "folder"
            alt = f"; not needed with the split file {osp.basename(alt)}" if alt else ""
            print(f"  {tasks_label(tasks)}: {what} not found: {path} "
                  f"(see DATASETS.md, section '{section}'{alt})")
    optional = [(c.name, p) for c in checks if c.ok for p in c.optional]
    if optional:
        action = ("written now" if args.write_splits and not args.paths_only
                  else "built from the images on first use, or now with --write-splits")
        print(f"\nOptional ({len(optional)} split file(s) not there; {action}):")
        for name, path in optional:
            print(f"  {name}: {path}")
    weights_ok = True
    if args.config_file or args.backbone or args.method:
        weights_ok, line = backbone_report(cfg)
        print("\n" + line)
    n_ok = len(checks) - n_bad
    print(f"\n{n_ok} of {len(checks)} tasks ready" +
          (f"; {n_bad} missing or broken (see DATASETS.md)" if n_bad else ""))
    return 1 if n_bad or not weights_ok else 0


if __name__ == "__main__":
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    sys.exit(main())
