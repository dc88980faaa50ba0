"""List, prune or fill the frozen-feature cache (FEATURE_CACHE.* in toolbox/config.py).

    python tools/cache.py list --root $DATA              # the cache beside the data
    python tools/cache.py list --dir /shared/feature_cache
    python tools/cache.py prune --root $DATA --backbone RN50 [--dry-run]
    python tools/cache.py prune --root $DATA --older-than 30
    python tools/cache.py precompute --root $DATA \\
        --dataset-config-file configs/datasets/general10.yaml \\
        --config-file configs/trainers/<Trainer>/vit_b16_ep50.yaml --splits test,val

``precompute`` builds a trainer (by default the first registered method that
trains nothing and whose image encoder is frozen: the zero-shot baseline; or
--trainer) from the configs, so its features carry exactly the keys later
runs with the same backbone, input settings and precision look up; training
features of a few-shot draw need ``--splits train`` and DATASET.NUM_SHOTS /
--seed as the runs use. ``prune`` removes whole stores (files) and only
stores: a run that needs one again rebuilds it. Bad arguments: one line
``error: ...`` and exit 2.
"""
import argparse
import datetime
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tabulate import tabulate  # noqa: E402

from toolbox.errors import UserError, one_line  # noqa: E402
from toolbox.features.cache import (BACKBONE_FILE, LOCK_SUFFIX,  # noqa: E402
                                    resolve_dir)
from toolbox.features.store import SUFFIX, TMP_PREFIX, DamagedStore, read_header  # noqa: E402


def cache_dir(args):
    if args.dir:
        return osp.abspath(osp.expanduser(args.dir))
    if args.root:
        return resolve_dir("", args.root)
    raise UserError("give --root DATA (the cache beside the data, as runs use by default) or "
                    "--dir FOLDER (FEATURE_CACHE.DIR)")


def stores(directory):
    """Every store under ``directory``: dicts with path, header fields, size, mtime."""
    found = []
    if not osp.isdir(directory):
        return found
    for folder, _, files in sorted(os.walk(directory)):
        for name in sorted(files):
            if not name.endswith(SUFFIX) or name.startswith(TMP_PREFIX):
                continue
            path = osp.join(folder, name)
            st = os.stat(path)
            row = {"path": path, "bytes": st.st_size, "mtime": st.st_mtime,
                   "backbone_dir": osp.relpath(path, directory).split(os.sep)[0]}
            try:
                head = read_header(path)
                row.update({k: head[k] for k in ("backbone", "weights_sha256", "task", "split",
                                                 "precision", "device", "n")})
            except (DamagedStore, OSError, KeyError) as e:
                row.update(backbone="?", weights_sha256="?", task="?", split="?",
                           precision="?", device="?", n=None, damaged=str(e))
            found.append(row)
    return found


def human(n):
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0


def cmd_list(args):
    directory = cache_dir(args)
    rows = stores(directory)
    print(f"Feature cache: {directory}")
    if not rows:
        print("(empty)")
        return
    table = [[r["backbone"], r["weights_sha256"][:12], r["task"], r["split"],
              f"{r['precision']}/{r['device']}",
              "damaged" if r.get("damaged") else f"{r['n']:,}", human(r["bytes"]),
              datetime.datetime.fromtimestamp(r["mtime"]).strftime("%Y-%m-%d %H:%M")]
             for r in rows]
    print(tabulate(table, headers=["backbone", "weights", "task", "split", "precision/device",
                                   "images", "size", "written"], tablefmt="github",
                   disable_numparse=True))
    total = sum(r["bytes"] for r in rows)
    print(f"{len(rows)} store(s), {sum(r['n'] or 0 for r in rows):,} image features, "
          f"{human(total)} on disk")


def _matches_backbone(row, wanted):
    return any(w in (row["backbone"], row["backbone_dir"]) or
               row["weights_sha256"].startswith(w) for w in wanted)


def cmd_prune(args):
    directory = cache_dir(args)
    if not (args.backbone or args.older_than is not None or args.all):
        raise UserError("say what to prune: --backbone NAME, --older-than DAYS or --all")
    if args.older_than is not None and args.older_than < 0:
        raise UserError(f"--older-than must be >= 0 days, got {args.older_than}")
    wanted = list(args.backbone or [])
    if wanted:  # any alias names the canonical backbone the stores record
        from trainers.backbones import canonical_name, is_backbone

        wanted += [canonical_name(w) for w in wanted if is_backbone(w)]
    cutoff = time.time() - 86400.0 * args.older_than if args.older_than is not None else None
    chosen = [r for r in stores(directory)
              if (not wanted or _matches_backbone(r, wanted))
              and (cutoff is None or r["mtime"] < cutoff)]
    from filelock import FileLock

    if not args.dry_run:  # refuse before removing anything, not halfway
        for folder in sorted({osp.dirname(r["path"]) for r in chosen}):
            if not os.access(folder, os.W_OK | os.X_OK):
                raise _unwritable(folder, PermissionError(13, "Permission denied"))
    for r in chosen:
        print(("would remove " if args.dry_run else "removing ") +
              f"{osp.relpath(r['path'], directory)} ({human(r['bytes'])})")
        if args.dry_run:
            continue
        try:
            with FileLock(r["path"] + LOCK_SUFFIX):  # not while a run writes it
                os.remove(r["path"])
        except OSError as e:
            raise _unwritable(osp.dirname(r["path"]), e) from None
        try:
            os.remove(r["path"] + LOCK_SUFFIX)
        except OSError:
            pass
    if not args.dry_run:
        try:
            _remove_empty(directory)
        except OSError as e:
            raise _unwritable(getattr(e, "filename", None) or directory, e) from None
    print(f"{len(chosen)} store(s), {human(sum(r['bytes'] for r in chosen))}"
          + (" would be removed" if args.dry_run else " removed"))


def _unwritable(folder, err):
    return UserError(f"cannot remove feature stores in {folder} ({err.strerror or err}); the cache "
                     "folder is read-only for you: prune as a user who can write it, or make it "
                     "writable")


def _remove_empty(directory):
    """Drop backbone/task folders left without stores (and stale temp files)."""
    for folder, dirs, files in os.walk(directory, topdown=False):
        if folder == directory:
            continue
        for name in files:
            path = osp.join(folder, name)
            if name.startswith(TMP_PREFIX) and time.time() - os.stat(path).st_mtime > 86400:
                os.remove(path)  # a temp file a killed run left a day ago
        left = os.listdir(folder)
        if set(left) <= {BACKBONE_FILE}:
            for name in left:
                os.remove(osp.join(folder, name))
            os.rmdir(folder)


def cmd_precompute(args):
    from toolbox.config_pipeline import cfg_from_argv

    wanted = [x for x in args.splits.split(",") if x]
    bad = [x for x in wanted if x not in ("train", "val", "test")]
    if bad or not wanted:
        raise UserError(f"--splits takes train, val and/or test, comma-separated; got "
                        f"'{args.splits}'")

    argv = ["--root", args.root, "--trainer", args.trainer or default_precompute_trainer(),
            "--dataset-config-file", args.dataset_config_file, "--seed", str(args.seed)]
    if args.config_file:
        argv += ["--config-file", args.config_file]
    opts = list(args.opts or [])
    cfg = cfg_from_argv(argv + ["VERBOSE", "False", "TEST.NO_TEST", "True"] + opts)
    if not cfg.FEATURE_CACHE.ENABLED:
        raise UserError("FEATURE_CACHE.ENABLED is False; nothing to precompute")
    from toolbox.data.datasets.check import require_data
    from toolbox.engine import build_trainer
    from toolbox.utils import set_random_seed

    require_data(cfg)
    if cfg.SEED >= 0:
        set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    if trainer.feature_cache is None:
        raise UserError("this trainer/config has no feature cache (no exact evaluation "
                        "transform)")
    ds = trainer.dm.dataset
    splits = {"train": ds.train_x, "val": ds.val, "test": ds.test}
    for split in wanted:
        items = splits[split] or []
        if not items:
            print(f"{split}: no images")
            continue
        start = time.perf_counter()
        trainer.cached_features(items, split, progress=True)
        print(f"{split}: {len(items):,} images ready in {time.perf_counter() - start:.1f} s")
    print(f"Cache: {trainer.feature_cache.dir}")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("list", "prune"):
        s = sub.add_parser(name)
        s.add_argument("--root", default="", help="data root ($DATA): its .feature_cache")
        s.add_argument("--dir", default="", help="the cache folder (FEATURE_CACHE.DIR)")
    prune = sub.choices["prune"]
    prune.add_argument("--backbone", nargs="+",
                       help="backbone name(s) (as in configs), folder name or weights hash prefix")
    prune.add_argument("--older-than", type=float, help="stores last written more than N days ago")
    prune.add_argument("--all", action="store_true", help="every store")
    prune.add_argument("--dry-run", action="store_true", help="only print what would go")
    pre = sub.add_parser("precompute")
    pre.add_argument("--root", required=True, help="data root ($DATA)")
    pre.add_argument("--dataset-config-file", required=True)
    pre.add_argument("--config-file", default="",
                     help="trainer config: backbone, INPUT.* and precision as the runs use")
    pre.add_argument("--trainer", default="", help="a trainer whose image encoder is frozen "
                     "(default: the zero-shot method's)")
    pre.add_argument("--splits", default="test,val",
                     help="comma-separated: train,val,test (default test,val)")
    pre.add_argument("--seed", type=int, default=1, help="few-shot draw of --splits train")
    pre.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides (KEY VALUE ...)")
    return p


def default_precompute_trainer():
    """The trainer of the first registered method that trains nothing and declares its
    image encoder frozen (evaluation only: the cheapest way to fill the cache)."""
    from toolbox.engine import TRAINER_REGISTRY
    from toolbox.methods import image_encoder_of, load_methods

    for m in load_methods().values():
        if not m.trains and image_encoder_of(TRAINER_REGISTRY.get(m.trainer)).frozen_in_evaluation:
            return m.trainer
    raise UserError("no registered method trains nothing with a frozen image encoder; give "
                    "--trainer")


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        {"list": cmd_list, "prune": cmd_prune, "precompute": cmd_precompute}[args.command](args)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
