"""``tools/bench.py --mode cache``: what the frozen-feature cache saves.

1. One evaluation pass (a context-tuning method: --cache-method, default the first
   method declared quick that trains on features; class prompts through the text encoder, then
   the image features) over ``--images`` synthetic JPEG files on disk at a
   real architecture's shapes (random weights, ``--classes`` classes), timed
   with the cache off, cold (empty folder: decode, encode, write) and warm (a
   fresh cache object reading the stores back).
2. FEATURE_CACHE.TRAIN_VIEWS at the same shapes: one training epoch (that method,
   ``--train-images`` images of ``--train-classes`` classes, random crops and
   flips) on images, the encoding of ``--train-views`` views, and one epoch
   on those views; the cost of E epochs either way follows from these.
3. A grid of demo runs: ``train.py`` for each of ``--grid-methods`` x
   ``--grid-seeds`` on the built-in demo (backbone ``--grid-arch``: the tiny
   CLIP, or a real architecture with random weights, whose encoder costs what
   it costs on real data) with the cache off and on (one fresh
   folder for the whole grid, as a sweep would share it), each run's off and
   on runs back to back so that load changes hit both grids alike. Wall time
   of each grid, whether their results tables are identical, and what Python
   alone spends importing train.py's modules (timed between the runs).

Thread counts are pinned (``--threads``: torch and OMP/MKL in every run).
"""
import contextlib
import io
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))



def cache_method(args):
    """The method timed in passes 1 and 2: --cache-method, else the first method
    declared quick that trains on (cached) features."""
    from toolbox.engine import TRAINER_REGISTRY
    from toolbox.methods import load_methods

    if args.cache_method:
        return args.cache_method
    for name, m in load_methods().items():
        if m.quick and TRAINER_REGISTRY.get(m.trainer).trains_on_features():
            return name
    raise SystemExit("error: no quick method trains on cached features; give --cache-method")


def write_images(folder, n_images, n_classes, size=256, seed=0):
    """``n_images`` smooth random RGB JPEGs, spread over ``n_classes`` folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n_images):
        label = i % n_classes
        low = rng.random((8, 8, 3)) * 255
        img = Image.fromarray(low.astype(np.uint8)).resize((size, size), Image.BICUBIC)
        cdir = osp.join(folder, f"class{label:03d}")
        os.makedirs(cdir, exist_ok=True)
        path = osp.join(cdir, f"{i:05d}.jpg")
        if not osp.exists(path):  # written once per work folder (the cache keys on mtime)
            img.save(path, quality=90)
        paths.append((path, label))
    return paths


def bench_trainer(args, work, n_classes, test_items, train_items=(), train_views=0,
                  name="eval"):
    """A trainer of the cache bench's method around the backbone (registry, seeded
    random weights: its
    identity is the hash of those weights) over image files on disk, one task."""
    from toolbox.data.data_manager import build_data_loader
    from toolbox.data.tasks import TaskInfo
    from toolbox.data.transforms import build_transform
    from toolbox.engine import TRAINER_REGISTRY

    from tools.bench import bench_cfg

    task = TaskInfo(name="bench", classnames=[f"object {c}" for c in range(n_classes)])
    method = cache_method(args)
    cfg = bench_cfg(method, args)
    cfg.defrost()
    cfg.INPUT.TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
    cfg.DATALOADER.TEST.BATCH_SIZE = args.eval_batch
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = args.train_batch
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.OUTPUT_DIR = osp.join(work, f"{name}_out")
    cfg.FEATURE_CACHE.DIR = osp.join(work, f"{name}_cache")
    cfg.FEATURE_CACHE.TRAIN_VIEWS = train_views
    cfg.SEED = 1
    cfg.freeze()

    class Bench(TRAINER_REGISTRY.get(cfg.TRAINER.NAME)):
        def build_data_loader(self):
            tfm_test = build_transform(self.cfg, is_train=False)
            tfm_train = build_transform(self.cfg, is_train=True)
            self.tasks = [task]
            self.num_classes = task.num_classes
            self.lab2cname = dict(enumerate(task.classnames))
            self.train_loader_u = self.val_loader = None
            self.train_loader_x = build_data_loader(
                self.cfg, "RandomSampler", data_source=list(train_items),
                batch_size=cfg.DATALOADER.TRAIN_X.BATCH_SIZE, tfm=tfm_train,
                is_train=True) if train_items else None
            self.test_loader = build_data_loader(self.cfg, "SequentialSampler",
                                                 data_source=test_items,
                                                 batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
                                                 tfm=tfm_test, is_train=False)
            self.dm = SimpleNamespace(tfm_test=tfm_test, tfm_train=tfm_train,
                                      dataset=SimpleNamespace(
                                          classnames=task.classnames, tasks=[task],
                                          test=test_items, val=None, train_x=list(train_items)))

    trainer = Bench(cfg)
    trainer.feature_cache  # the backbone identity (hash of the random weights), untimed
    return trainer


def bench_items(args, work, n_classes, n_images):
    from toolbox.data.datasets import Datum

    files = write_images(osp.join(work, "images"), args.images, args.eval_classes)
    return [Datum(impath=p, label=y % n_classes, classname=f"object {y % n_classes}")
            for p, y in files[:n_images]]


def warm_up(trainer):
    """First-call allocations and kernels, on a small batch (never timed)."""
    import torch

    size = tuple(trainer.cfg.INPUT.SIZE)
    trainer.encode_image(torch.randn(2, 3, *size).to(trainer.device))
    with torch.no_grad():
        trainer.class_text_features()


def eval_passes(args, work):
    """Seconds of one test pass with the cache off, cold and warm."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    items = bench_items(args, work, args.eval_classes, args.images)
    trainer = bench_trainer(args, work, args.eval_classes, items)

    def timed():
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            acc = trainer.test()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, acc

    cache = trainer._feature_cache
    trainer._feature_cache = None
    warm_up(trainer)
    off, acc_off = timed()
    trainer._feature_cache = cache
    cold, acc_cold = timed()
    from toolbox.features import FeatureCache

    trainer._feature_cache = FeatureCache(cache.dir, cache.identity, cache.transform,
                                          cache.precision, cache.device_kind)
    warm, acc_warm = timed()
    return dict(off=off, cold=cold, warm=warm,
                same_accuracy=acc_off == acc_cold == acc_warm)


def train_views(args, work):
    """Seconds of one training epoch on images, of encoding the views, and of
    one epoch on the views (FEATURE_CACHE.TRAIN_VIEWS)."""
    import torch

    from toolbox.engine import TrainerX
    from trainers.feature_cache import train_view_features

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    items = bench_items(args, work, args.train_classes, args.train_images)
    trainer = bench_trainer(args, work, args.train_classes, items[:1], items,
                            train_views=args.train_views, name="train")
    trainer.epoch, trainer.max_epoch = 0, 1
    trainer.set_model_mode("train")
    warm_up(trainer)

    def timed(fn):
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    on_images = timed(lambda: TrainerX.run_epoch(trainer))  # the TRAIN_VIEWS 0 epoch
    views = timed(lambda: setattr(trainer, "_train_views", train_view_features(
        trainer, items, args.train_views)))
    on_views = timed(trainer.run_epoch)
    return dict(on_images=on_images, views=views, on_views=on_views)


def _env(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                PYTHONWARNINGS="ignore")


def grid(args, work):
    """Wall seconds and results table of the demo grid with the cache off and on."""
    from datasets.demo import ensure_demo_images

    data = osp.join(work, "data")
    ensure_demo_images(osp.join(data, "demo_digits"))
    # the tiny CLIP of the demo configs, or a real architecture with random weights
    arch = [] if args.grid_arch == "tiny_vit" else \
        ["MODEL.BACKBONE.NAME", args.grid_arch, "MODEL.BACKBONE.PRETRAINED", "random"]
    from tools.backbones import resolve_config
    from tools.bench import method_setting

    commands = []
    for method in args.grid_methods:
        _, _, setting = method_setting(method, "tiny_vit", tasks=1, shots=args.grid_shots)
        _, config_file, _ = resolve_config(setting.trainer, setting.config)
        for seed in args.grid_seeds:
            commands.append((method, seed, lambda out, *opts, st=setting, cf=config_file, sd=seed: [
                sys.executable, osp.join(ROOT, "train.py"), "--root", data, "--seed", str(sd),
                "--trainer", st.trainer, "--dataset-config-file",
                osp.join(ROOT, "configs/datasets/demo.yaml"),
                "--config-file", cf, "--output-dir", out,
                "DATASET.NUM_SHOTS", str(args.grid_shots), *st.opts, *opts]))
    # the few-shot draws and split files are written by an untimed first run (on the
    # tiny CLIP: they do not depend on the backbone)
    for method, seed, cmd in commands:
        if method == args.grid_methods[0]:
            proc = subprocess.run(cmd(osp.join(work, "warmup", str(seed)),
                                      "FEATURE_CACHE.ENABLED", "False"),
                                  cwd=ROOT, env=_env(args.threads), capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"error: the untimed first run failed:\n{proc.stderr[-2000:]}")
    seconds = {"off": 0.0, "on": 0.0, "imports": 0.0}
    tables = {"off": {}, "on": {}}
    for method, seed, cmd in commands:
        for mode in ("off", "on"):
            extra = ["FEATURE_CACHE.ENABLED", "False"] if mode == "off" else \
                ["FEATURE_CACHE.DIR", osp.join(work, "grid_cache")]
            run_dir = osp.join(work, f"grid_{mode}", f"{method}_seed{seed}")
            start = time.perf_counter()
            proc = subprocess.run(cmd(run_dir, *arch, *extra), cwd=ROOT,
                                  env=_env(args.threads), capture_output=True, text=True)
            seconds[mode] += time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"error: {method} seed {seed} failed:\n{proc.stderr[-2000:]}")
            with open(osp.join(run_dir, "results.json")) as f:
                r = json.load(f)
            tables[mode][(method, seed)] = (r["overall"], [t["value"] for t in r["tasks"]])
        # the fixed cost of a run's process: Python importing what train.py imports
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import train, datasets, trainers"], cwd=ROOT,
                       env=_env(args.threads), check=True, capture_output=True)
        seconds["imports"] += time.perf_counter() - start
    return seconds, tables


def cache_bench(args):
    from tabulate import tabulate

    work = args.work_dir or tempfile.mkdtemp(prefix="bench-cache-")
    os.makedirs(work, exist_ok=True)
    load = os.getloadavg()[0]
    shapes = "" if args.no_eval and args.train_views <= 0 else \
        (f"arch {args.arch} (random weights), {args.images} JPEG files, {args.eval_classes} "
         f"classes, eval batch {args.eval_batch}, ")
    print(f"Feature-cache bench: {shapes}device {args.device}, {args.threads} thread(s); "
          f"load average at start {load:.2f} on {os.cpu_count()} CPUs")
    try:
        if not args.no_eval:
            e = eval_passes(args, work)
            print(tabulate([["off", f"{e['off']:.2f}", "1.00"],
                            ["cold (encode + write)", f"{e['cold']:.2f}",
                             f"{e['cold'] / e['off']:.2f}"],
                            ["warm (read)", f"{e['warm']:.2f}", f"{e['warm'] / e['off']:.3f}"]],
                           headers=["evaluation pass", "seconds", "x off"], tablefmt="github",
                           disable_numparse=True))
            print(f"warm / cold = {e['warm'] / e['cold']:.3f} (target <= 0.1); "
                  f"same accuracy off/cold/warm: {e['same_accuracy']}")
        if args.train_views > 0:
            t = train_views(args, work)
            print(f"Training views: {cache_method(args)}, {args.train_images} images of "
                  f"{args.train_classes} "
                  f"classes, batch {args.train_batch}, random crop + flip, "
                  f"FEATURE_CACHE.TRAIN_VIEWS {args.train_views}")
            rows = [["one epoch on images", f"{t['on_images']:.2f}"],
                    [f"encoding {args.train_views} views (once)", f"{t['views']:.2f}"],
                    ["one epoch on views", f"{t['on_views']:.2f}"]]
            for e in (10, 50):
                rows.append([f"{e} epochs: images / views",
                             f"{e * t['on_images']:.0f} / "
                             f"{t['views'] + e * t['on_views']:.0f}"])
            print(tabulate(rows, headers=["training", "seconds"], tablefmt="github",
                           disable_numparse=True))
        if not args.no_grid:
            seconds, tables = grid(args, work)
            n = len(tables["off"])
            t_off, t_on, imports = seconds["off"], seconds["on"], seconds["imports"]
            print(f"Demo grid: {n} train.py runs ({', '.join(args.grid_methods)} x seeds "
                  f"{' '.join(map(str, args.grid_seeds))}, {args.grid_shots} shots), backbone "
                  f"{args.grid_arch}" + ("" if args.grid_arch == "tiny_vit" else
                                         " (random weights)"))
            print(tabulate([["cache off", f"{t_off:.1f}"],
                            ["cache on (cold folder)", f"{t_on:.1f}"],
                            [f"Python imports alone, x {n}", f"{imports:.1f}"]],
                           headers=["grid", "wall seconds"], tablefmt="github",
                           disable_numparse=True))
            print(f"off / on = {t_off / t_on:.2f}x (target >= 3); identical results tables: "
                  f"{tables['off'] == tables['on']}")
            if t_on > imports:
                print(f"without the imports: off / on = "
                      f"{(t_off - imports) / (t_on - imports):.2f}x")
            print(f"load average at end {os.getloadavg()[0]:.2f}")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
