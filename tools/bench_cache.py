"""``tools/bench.py --mode cache``: what the frozen-feature cache saves.

1. One evaluation pass (CoOp: class prompts through the text encoder, then
   the image features) over ``--images`` synthetic JPEG files on disk at a
   real architecture's shapes (random weights, ``--classes`` classes), timed
   with the cache off, cold (empty folder: decode, encode, write) and warm (a
   fresh cache object reading the stores back).
2. A grid of demo runs: ``train.py`` for each of ``--grid-methods`` x
   ``--grid-seeds`` on the built-in demo with the cache off, then on (one
   fresh folder for the whole grid, as a sweep would share it). Wall time of
   each grid and whether their results tables are identical.

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

GRID_CONFIGS = {
    "ZeroshotCLIP": "configs/trainers/ZeroshotCLIP/tiny_vit.yaml",
    "LinearProbeCLIP": "configs/trainers/LinearProbeCLIP/tiny_vit.yaml",
    "CoOp": "configs/trainers/CoOp/tiny_vit_ep10.yaml",
    "CoCoOp": "configs/trainers/CoCoOp/tiny_vit_c4_ep10_batch1_ctxv1.yaml",
    "CoOpMT": "configs/trainers/CoOpMT/tiny_vit_ep10.yaml",
    "SoftCPT": "configs/trainers/SoftCPT/tiny_vit_ep10.yaml",
    "KgCoOp": "configs/trainers/KgCoOp/tiny_vit_ep10.yaml",
    "DualViewMI": "configs/trainers/DualViewMI/tiny_vit_ep10.yaml",
}


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
        img.save(path, quality=90)
        paths.append((path, label))
    return paths


def eval_passes(args, work):
    """Seconds of one test pass with the cache off, cold and warm."""
    import torch

    from toolbox.data.data_manager import build_data_loader
    from toolbox.data.datasets import Datum
    from toolbox.data.tasks import TaskInfo
    from toolbox.data.transforms import build_transform
    from toolbox.engine import TRAINER_REGISTRY

    from tools.bench import bench_cfg

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    task = TaskInfo(name="bench", classnames=[f"object {c}" for c in range(args.eval_classes)])
    files = write_images(osp.join(work, "images"), args.images, args.eval_classes)
    items = [Datum(impath=p, label=y, classname=task.classnames[y]) for p, y in files]

    # the backbone through the registry with seeded random weights; its identity
    # is then the hash of those weights (no file)
    cfg = bench_cfg("CoOp", args)
    cfg.defrost()
    cfg.INPUT.TRANSFORMS = ("normalize",)
    cfg.DATALOADER.TEST.BATCH_SIZE = args.eval_batch
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.OUTPUT_DIR = osp.join(work, "eval_out")
    cfg.FEATURE_CACHE.DIR = osp.join(work, "eval_cache")
    cfg.TRAINER.COOP.N_CTX = 4
    cfg.freeze()

    class Bench(TRAINER_REGISTRY.get("CoOp")):
        def build_data_loader(self):  # image files on disk, one task
            tfm = build_transform(self.cfg, is_train=False)
            self.tasks = [task]
            self.num_classes = task.num_classes
            self.lab2cname = dict(enumerate(task.classnames))
            self.train_loader_x = self.train_loader_u = self.val_loader = None
            self.test_loader = build_data_loader(self.cfg, "SequentialSampler",
                                                 data_source=items,
                                                 batch_size=cfg.DATALOADER.TEST.BATCH_SIZE,
                                                 tfm=tfm, is_train=False)
            self.dm = SimpleNamespace(tfm_test=tfm, dataset=SimpleNamespace(
                classnames=task.classnames, tasks=[task], test=items, val=None, train_x=None))

    trainer = Bench(cfg)
    trainer.feature_cache  # the backbone identity (hash of the random weights), untimed

    def timed():
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            acc = trainer.test()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, acc

    cache = trainer._feature_cache
    trainer._feature_cache = None
    timed()  # warm-up: first-call allocations must not land on any timed pass
    off, acc_off = timed()
    trainer._feature_cache = cache
    cold, acc_cold = timed()
    from toolbox.features import FeatureCache

    trainer._feature_cache = FeatureCache(cache.dir, cache.identity, cache.transform,
                                          cache.precision, cache.device_kind)
    warm, acc_warm = timed()
    return dict(off=off, cold=cold, warm=warm,
                same_accuracy=acc_off == acc_cold == acc_warm)


def _env(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                PYTHONWARNINGS="ignore")


def grid(args, work):
    """Wall seconds and results table of the demo grid with the cache off and on."""
    from datasets.demo import ensure_demo_images

    data = osp.join(work, "data")
    ensure_demo_images(osp.join(data, "demo_digits"))
    commands = []
    for method in args.grid_methods:
        for seed in args.grid_seeds:
            commands.append((method, seed, lambda out, *opts, m=method, s=seed: [
                sys.executable, osp.join(ROOT, "train.py"), "--root", data, "--seed", str(s),
                "--trainer", m, "--dataset-config-file",
                osp.join(ROOT, "configs/datasets/demo.yaml"),
                "--config-file", osp.join(ROOT, GRID_CONFIGS[m]), "--output-dir", out,
                "DATASET.NUM_SHOTS", str(args.grid_shots), *opts]))
    # the few-shot draws and split files are written by an untimed first run
    for method, seed, cmd in commands:
        if method == args.grid_methods[0]:
            proc = subprocess.run(cmd(osp.join(work, "warmup", str(seed)),
                                      "FEATURE_CACHE.ENABLED", "False"),
                                  cwd=ROOT, env=_env(args.threads), capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"error: the untimed first run failed:\n{proc.stderr[-2000:]}")
    out = {}
    for mode in ("off", "on"):
        extra = ["FEATURE_CACHE.ENABLED", "False"] if mode == "off" else \
            ["FEATURE_CACHE.DIR", osp.join(work, "grid_cache")]
        start = time.perf_counter()
        table = {}
        for method, seed, cmd in commands:
            run_dir = osp.join(work, f"grid_{mode}", f"{method}_seed{seed}")
            proc = subprocess.run(cmd(run_dir, *extra), cwd=ROOT,
                                  env=_env(args.threads), capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"error: {method} seed {seed} failed:\n{proc.stderr[-2000:]}")
            with open(osp.join(run_dir, "results.json")) as f:
                r = json.load(f)
            table[(method, seed)] = (r["overall"], [t["value"] for t in r["tasks"]])
        out[mode] = (time.perf_counter() - start, table)
    return out


def cache_bench(args):
    from tabulate import tabulate

    work = args.work_dir or tempfile.mkdtemp(prefix="bench-cache-")
    os.makedirs(work, exist_ok=True)
    load = os.getloadavg()[0]
    print(f"Feature-cache bench: arch {args.arch} (random weights), {args.images} JPEG files, "
          f"{args.eval_classes} classes, eval batch {args.eval_batch}, device {args.device}, "
          f"{args.threads} thread(s); load average at start {load:.2f} on {os.cpu_count()} CPUs")
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
        if not args.no_grid:
            g = grid(args, work)
            (t_off, tab_off), (t_on, tab_on) = g["off"], g["on"]
            n = len(tab_off)
            print(f"Demo grid: {n} train.py runs ({', '.join(args.grid_methods)} x seeds "
                  f"{' '.join(map(str, args.grid_seeds))}, {args.grid_shots} shots)")
            print(tabulate([["cache off", f"{t_off:.1f}"], ["cache on (cold folder)", f"{t_on:.1f}"]],
                           headers=["grid", "wall seconds"], tablefmt="github",
                           disable_numparse=True))
            print(f"off / on = {t_off / t_on:.2f}x (target >= 3); identical results tables: "
                  f"{tab_off == tab_on}")
            print(f"load average at end {os.getloadavg()[0]:.2f}")
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
