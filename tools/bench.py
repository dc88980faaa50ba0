"""Training-step speed and peak memory of registered methods (python tools/methods.py;
default: the comparison's methods that train) on a CLIP of a real architecture's
shapes (random weights, no download) with synthetic tasks and images (no dataset).
Each method runs its own recipe (its declaration's trainer config for the backbone)
with the batch size given here.

    python tools/bench.py --arch vit_b16 --tasks 3 --classes 5 --batch 4 --steps 3
    python tools/bench.py --arch rn50 --tasks 44 --classes 36 --batch 32 --device cuda
    python tools/bench.py --arch vit_b16 open_clip:ViT-B-16 --methods METHOD  # side by side
    python tools/bench.py --methods METHOD:VARIANT OTHER --arch rn50
    python tools/bench.py --mode cache --arch vit_b16 --images 200 --eval-classes 100 --threads 2

``--mode ddp-text`` times the class prompts split over DDP ranks (tools/bench_ddp.py):

    python tools/bench.py --mode ddp-text --arch tiny_vit --tasks 1 --classes 1000 --batch 8

``--mode grid`` times a demo grid (tools/grid.py) with 1 and K workers (tools/bench_grid.py):

    python tools/bench.py --mode grid --grid-methods METHOD METHOD --grid-seeds 1 2 \
        --grid-shots 4 --workers 2 --threads 1

``--input features`` times the step on cached image features (what
FEATURE_CACHE.TRAIN_VIEWS feeds a frozen-encoder trainer) instead of images; methods
that cannot train on features are refused. With several methods, each row's time and
memory are also given relative to the first method's (measured in the same run):

    python tools/bench.py --arch vit_b16 --tasks 1 --classes 100 --methods BASE OTHER \
        --input features --shots 16

``--mode cache`` times the frozen-feature cache instead (cache_bench): one
evaluation pass over image files on disk with the cache off, cold and warm,
training epochs on images and on FEATURE_CACHE.TRAIN_VIEWS views, then a
grid of demo runs (train.py, 3 methods x 2 seeds) with the cache off and on,
whose results tables must be identical.

Several --arch values are timed in one run, method by method, each backbone
right after the other, with the same thread count (--threads, default 2), so
their ratio is measured side by side.

Each method runs in its own process, so peak memory is that method's alone:
CPU reports the peak resident set size (ru_maxrss; it includes the frozen
CLIP, shown separately as "after build"), CUDA torch.cuda.max_memory_allocated.
"""
import argparse
import json
import os
import os.path as osp
import resource
import subprocess
import sys
import time
from types import SimpleNamespace

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tabulate import tabulate  # noqa: E402



def default_methods():
    """The comparison's methods that train (each with its default variant)."""
    from toolbox.methods import load_methods

    return [n for n, m in load_methods().items() if m.in_comparison and m.trains]


def quick_methods():
    """The methods declared quick (cheap): the benches' default demo grids."""
    from toolbox.methods import load_methods

    return [n for n, m in load_methods().items() if m.quick]


def method_setting(entry, arch, tasks=1, shots=16):
    """(declaration, variant, Setting) of ``entry`` (METHOD[:VARIANT], a method or
    trainer name) for backbone ``arch``: its recipe as a grid run would get it."""
    from toolbox.errors import UserError
    from toolbox.methods import RunContext, get_method, load_methods, method_of_trainer
    from trainers.backbones import get_backbone

    name, _, variant = entry.partition(":")
    load_methods()
    try:
        m = get_method(name)
    except UserError:
        m = method_of_trainer(name)
        if m is None:
            raise
    variant = variant or m.default_variant
    m.check_variant(variant)
    entry_bb = get_backbone(arch)
    ctx = RunContext("synthetic", shots, entry_bb.name,
                     "tiny" if entry_bb.tiny else entry_bb.family, tasks > 1, "fewshot", {})
    return m, variant, m.setting(ctx, variant)


def synthetic_items(tasks, shots):
    """``shots`` training items per class without images (for trainers that build a
    structure over the training set at build time, e.g. a key-value cache)."""
    from toolbox.data.datasets import Datum

    return [Datum(impath="", label=t.offset + c, task=i)
            for i, t in enumerate(tasks) for c in range(t.num_classes) for _ in range(shots)]


def synthetic_training_views():
    """The feature cache's training views as random unit features (the bench has no
    images): a trainer reading them at build time gets their shape and cost."""
    import torch
    import torch.nn.functional as F

    from trainers import feature_cache
    from trainers.clip_model import embed_dim

    def random_views(trainer, items, n_views):
        g = torch.Generator().manual_seed(0)
        feats = torch.randn(n_views, len(items), embed_dim(trainer.clip_model), generator=g)
        return F.normalize(feats, dim=-1)

    feature_cache.train_view_features = random_views


def synthetic_tasks(n_tasks, n_classes):
    from toolbox.data.tasks import TaskInfo

    return [TaskInfo(name=f"task {t}", classnames=[f"object {t} {c}" for c in range(n_classes)],
                     description=f"which object of group {t}", offset=t * n_classes)
            for t in range(n_tasks)]


def bench_cfg(method, args):
    """The config of one timed method: its recipe (trainer config and the variant's
    overrides) for the backbone, the backbone through the registry with seeded random
    weights (MODEL.BACKBONE.PRETRAINED random), the batch size and precision asked;
    built by the config pipeline (toolbox/config_pipeline.py) as train.py builds it."""
    import trainers  # noqa: F401  (registers the trainers)
    from toolbox.config_pipeline import cfg_from_argv
    from toolbox.engine import TRAINER_REGISTRY
    from tools.backbones import resolve_config

    m, variant, s = method_setting(method, args.arch, args.tasks)
    _, config_file, _ = resolve_config(s.trainer, s.config)
    opts = [*s.opts, "USE_CUDA", args.device == "cuda", "MODEL.BACKBONE.NAME", args.arch,
            "MODEL.BACKBONE.PRETRAINED", "random", "MODEL.BACKBONE.PATH", "",
            "DATALOADER.TRAIN_X.BATCH_SIZE", args.batch, "VERBOSE", False,
            "SEED", 0,  # fixed (recipes with FEATURE_CACHE.TRAIN_VIEWS need one)
            *(getattr(args, "opts", None) or [])]
    key = getattr(TRAINER_REGISTRY.get(s.trainer), "prec_key", None)
    if key:
        opts += [f"TRAINER.{key}.PREC", args.prec]
    cfg = cfg_from_argv(["--trainer", s.trainer, "--config-file", config_file, *opts])
    if cfg.OPTIM.MAX_EPOCH < 1:  # (zero-shot recipes: the LR schedule needs an epoch)
        cfg.defrost()
        cfg.OPTIM.MAX_EPOCH = 1
        cfg.freeze()
    return cfg


def build_bench_trainer(method, args):
    """A METHOD trainer around a random CLIP of ``args.arch`` on synthetic tasks
    (no dataset, no loaders): (trainer, cfg, tasks)."""
    import torch

    import trainers  # noqa: F401  (registers the trainers)
    from toolbox.engine import TRAINER_REGISTRY

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tasks = synthetic_tasks(args.tasks, args.classes)
    cls = TRAINER_REGISTRY.get(method_setting(method, args.arch, args.tasks)[2].trainer)

    from toolbox.methods import image_encoder_of

    class Bench(cls):
        image_encoder = image_encoder_of(cls)  # the trainer's own (contracts are not inherited)

        def build_data_loader(self):  # synthetic tasks instead of a dataset
            self.tasks = tasks
            self.num_classes = sum(t.num_classes for t in tasks)
            self.lab2cname = {i: c for i, c in enumerate(c for t in tasks for c in t.classnames)}
            self.train_loader_x = self.val_loader = self.test_loader = None
            self.dm = SimpleNamespace(dataset=SimpleNamespace(
                classnames=list(self.lab2cname.values()), tasks=tasks,
                train_x=synthetic_items(tasks, args.shots), val=[], test=[]),
                tfm_train=None, tfm_test=None)

    synthetic_training_views()

    cfg = bench_cfg(method, args)
    trainer = Bench(cfg)
    trainer.set_model_mode("train")
    trainer.epoch, trainer.batch_idx, trainer.num_batches = 0, 0, 10 ** 9
    return trainer, cfg, tasks


def worker(args):
    """Build one trainer around a random CLIP and time its training steps."""
    import torch

    device = torch.device(args.device)
    trainer, cfg, tasks = build_bench_trainer(args.worker, args)
    after_build = rss_mb()
    n_params = sum(p.numel() for n in trainer.get_model_names()
                   for p in trainer._models[n].parameters() if p.requires_grad)
    g = torch.Generator().manual_seed(0)
    res = tuple(cfg.INPUT.SIZE)
    features = args.input == "features"
    if features:
        from trainers.clip_model import embed_dim

        if not type(trainer).trains_on_features():
            raise SystemExit(f"error: {args.worker} does not train on cached image features "
                             "(it trains or prompts its image encoder); drop --input features")
        trainer._on_features = True  # batches hold features, as FEATURE_CACHE.TRAIN_VIEWS's
        dim = embed_dim(trainer.clip_model)

    def batch():
        task = torch.randint(args.tasks, (args.batch,), generator=g)
        label = task * args.classes + torch.randint(args.classes, (args.batch,), generator=g)
        img = (torch.nn.functional.normalize(torch.randn(args.batch, dim, generator=g), dim=-1)
               if features else torch.randn(args.batch, 3, *res, generator=g))
        return {"img": img, "label": label, "task": task}

    cuda = device.type == "cuda"
    trainer.forward_backward(batch())  # warm-up (allocations, kernels)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        b = batch()
        start = time.perf_counter()
        trainer.forward_backward(b)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    ms = 1000.0 * sum(times) / len(times)
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else rss_mb()
    print(json.dumps(dict(method=args.worker, ms_per_step=ms, images_per_s=1000.0 * args.batch / ms,
                          peak_mb=peak, after_build_mb=None if cuda else after_build,
                          trainable=n_params)))


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def extra_modes():
    """The method benchmarks of benchmarks/ ({mode: module})."""
    from benchmarks import modes

    return modes()


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arch", nargs="+", default=["vit_b16"],
                   help="registered backbones (python tools/backbones.py): rn50, vit_b16, "
                        "open_clip:ViT-B-16, tiny_vit, ...; random weights of their architecture; "
                        "several are timed side by side (train mode)")
    p.add_argument("--tasks", type=int, default=3, help="number of synthetic tasks")
    p.add_argument("--classes", type=int, default=5, help="classes per task")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="METHOD[:VARIANT] ... (python tools/methods.py; default: the "
                   "comparison's methods that train)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--opts", nargs="+", default=[], help="KEY VALUE config overrides for every "
                   "timed method (e.g. a method's activation-checkpointing key)")
    p.add_argument("--prec", default="fp16", help="PREC on CUDA (fp16 amp bf16 fp32); CPU: fp32")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    # --mode cache (tools/bench_cache.py)
    extra = extra_modes()
    p.add_argument("--mode", default="train",
                   choices=("train", "cache", "ddp-text", "grid") + tuple(extra),
                   help="train: training steps per method; cache: the feature cache; "
                   "ddp-text: class prompts split over DDP ranks (tools/bench_ddp.py); "
                   "grid: a demo grid with 1 and --workers workers (tools/bench_grid.py)"
                   + "".join(f"; {m}: {mod.HELP}" for m, mod in extra.items()))
    for mod in extra.values():
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(p)
    p.add_argument("--input", default="images", choices=("images", "features"),
                   help="train: steps on images, or on cached image features (the "
                   "FEATURE_CACHE.TRAIN_VIEWS path of frozen-encoder trainers)")
    p.add_argument("--shots", type=int, default=16,
                   help="train: synthetic training items per class (for trainers that build "
                   "on the training set, e.g. a key-value cache)")
    p.add_argument("--workers", type=int, default=2, help="grid: workers of the parallel grid")
    p.add_argument("--grid-epochs", type=int, default=10, help="grid: OPTIM.MAX_EPOCH")
    p.add_argument("--nproc", type=int, default=2, help="ddp-text: gloo processes")
    p.add_argument("--rounds", type=int, default=2,
                   help="ddp-text, grid: rounds of the settings, side by side")
    p.add_argument("--images", type=int, default=200, help="cache: image files to evaluate")
    p.add_argument("--eval-classes", type=int, default=100, help="cache: classes of those images")
    p.add_argument("--eval-batch", type=int, default=50, help="cache: evaluation batch size")
    p.add_argument("--threads", type=int, default=None,
                   help="torch/OMP threads per process (default 2; ddp-text and grid: 1)")
    p.add_argument("--train-views", type=int, default=2,
                   help="cache: FEATURE_CACHE.TRAIN_VIEWS timed at --arch shapes (0: skip)")
    p.add_argument("--train-images", type=int, default=32, help="cache: training images")
    p.add_argument("--train-classes", type=int, default=10, help="cache: their classes")
    p.add_argument("--train-batch", type=int, default=32, help="cache: training batch size")
    p.add_argument("--grid-methods", nargs="+", default=None,
                   help="grid, cache: the demo grid's methods (default: those declared quick)")
    p.add_argument("--grid-seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--grid-shots", type=int, default=4)
    p.add_argument("--grid-arch", default="tiny_vit",
                   help="cache: the demo grid's backbone; another registered one runs with "
                        "random weights of its architecture (MODEL.BACKBONE.PRETRAINED random)")
    p.add_argument("--cache-method", default="", help="cache: the method of the evaluation and "
                   "training-view passes (default: the first quick one that trains on features)")
    p.add_argument("--no-eval", action="store_true", help="cache: skip the evaluation passes")
    p.add_argument("--no-grid", action="store_true", help="cache: skip the demo grid")
    p.add_argument("--work-dir", default="", help="cache: keep images, caches and runs here")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    if args.worker:
        args.arch = args.arch[0]
        return worker(args)
    from toolbox.errors import UserError, one_line
    from trainers.backbones import canonical_name

    try:
        archs = [canonical_name(a) for a in args.arch]
        args.methods = args.methods or default_methods()
        args.grid_methods = args.grid_methods or quick_methods()
        for entry in args.methods:
            method_setting(entry, archs[0], args.tasks)  # an unknown name: one line, now
    except UserError as e:
        raise SystemExit(f"error: {one_line(e)}")
    if args.mode in ("grid", "ddp-text"):
        if len(archs) > 1:
            raise SystemExit(f"error: --mode {args.mode} times one backbone; give one --arch")
        args.arch = archs[0]
    extra = extra_modes()
    if args.mode in extra:
        return extra[args.mode].run(args)
    if args.mode == "grid":
        from tools.bench_grid import grid_bench

        args.threads = args.threads or 1
        return grid_bench(args)
    if args.mode == "ddp-text":
        from tools.bench_ddp import ddp_text_bench

        if args.device != "cpu":
            raise SystemExit("error: --mode ddp-text runs gloo processes on the CPU; drop "
                             "--device")
        args.threads = args.threads or 1
        return ddp_text_bench(args)
    if args.threads is None:
        args.threads = 2
    if args.mode == "cache":
        if len(archs) > 1:
            raise SystemExit("error: --mode cache times one backbone; give one --arch")
        args.arch = archs[0]
        from tools.bench_cache import cache_bench

        return cache_bench(args)
    rows = []
    base_ms = {}
    first = {}  # per arch: the first method's figures (the "vs first" columns)
    several = len(args.methods) > 1
    for method in args.methods:
        for arch in archs:
            cmd = [sys.executable, osp.abspath(__file__), "--worker", method, "--arch", arch,
                   "--tasks", str(args.tasks), "--classes", str(args.classes),
                   "--batch", str(args.batch), "--steps", str(args.steps),
                   "--device", args.device, "--prec", args.prec,
                   "--threads", str(args.threads), "--input", args.input,
                   "--shots", str(args.shots)] + (["--opts", *args.opts] if args.opts else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                  env=dict(os.environ, PYTHONWARNINGS="ignore",
                                           OMP_NUM_THREADS=str(args.threads),
                                           MKL_NUM_THREADS=str(args.threads)))
            if proc.returncode != 0:
                raise SystemExit(f"error: {method} on {arch} failed:\n{proc.stderr[-2000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            base_ms.setdefault(method, r["ms_per_step"])
            first.setdefault(arch, r)
            decl, _, setting = method_setting(method, arch, args.tasks)
            row = [decl.table_label(setting.variant)]
            if len(archs) > 1:
                row += [arch, f"{r['ms_per_step'] / base_ms[method]:.2f}"]
            if several:
                row += [f"{r['ms_per_step'] / first[arch]['ms_per_step']:.3g}",
                        f"{r['peak_mb'] / first[arch]['peak_mb']:.3g}"]
            rows.append(row + [
                f"{r['ms_per_step']:.1f}", f"{r['images_per_s']:.2f}", f"{r['peak_mb']:.0f}",
                "-" if r["after_build_mb"] is None else f"{r['after_build_mb']:.0f}",
                f"{r['trainable']:,}"])
    mem = "peak GPU MB" if args.device == "cuda" else "peak RSS MB"
    print(f"arch {' vs '.join(archs)} (random weights), {args.tasks} tasks x {args.classes} "
          f"classes, batch {args.batch}, {args.steps} timed steps, device {args.device}, "
          f"{args.threads} thread(s), input {args.input}"
          + (f" ({args.shots} training items per class)" if args.input == "features" else ""))
    vs = args.methods[0].split(":")[0]
    headers = ["method"] + (["arch", f"time vs {archs[0]}"] if len(archs) > 1 else []) + (
        [f"time vs {vs}", f"memory vs {vs}"] if several else []) + [
        "ms/step", "images/s", mem, "RSS after build MB", "trainable params"]
    print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))


if __name__ == "__main__":
    main()
