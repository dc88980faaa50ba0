"""``python tools/bench.py --mode adapters``: the training step of the issue-21 baselines
against CoOp's, side by side in one run, each in its own process (peak memory is that
method's alone), the same thread count for all, random weights of a real architecture:

- on cached features (FEATURE_CACHE.TRAIN_VIEWS): Tip-Adapter-F's step (the keys,
  classes x shots of them) vs CoOp's step (its text encoder over the batch's classes);
- on images: CLIP-LoRA's step (both towers forward and backward) vs CoOp's (frozen
  image encoder forward, text encoder backward).

    python tools/bench.py --mode adapters --arch vit_b16 --tasks 1 --classes 100 --shots 16 \\
        --batch 32 --steps 3 --threads 2
"""
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# (row label, trainer, input): the pairs compared, each against the CoOp row of its input
ROWS = (("CoOp", "CoOp", "features"), ("Tip-Adapter-F", "TipAdapterF", "features"),
        ("CoOp", "CoOp", "images"), ("CLIP-LoRA", "CLIPLoRA", "images"))


def build(method, args):
    """A bench trainer (tools/bench.py's synthetic tasks) of ``method``."""
    from tools import bench

    if method == "TipAdapterF":
        fake_cache(args)
    return bench.build_bench_trainer(method, args)


def fake_cache(args):
    """Tip-Adapter-F on classes x shots random unit keys instead of an encoded training
    set (the step's cost depends on their number only)."""
    import torch
    import torch.nn.functional as F

    from toolbox.data.datasets import Datum
    from trainers.tip_adapter import TipAdapterF

    n_cls = args.tasks * args.classes
    build_model = TipAdapterF.build_model

    def with_items(self):
        labels = [i % n_cls for i in range(n_cls * args.shots)]
        self.dm.dataset.train_x = [Datum(impath="", label=c, task=c // args.classes)
                                   for c in labels]
        return build_model(self)

    def random_keys(self, items):
        g = torch.Generator().manual_seed(0)
        keys = torch.randn(len(items), self.clip_weights.shape[1], generator=g)
        return F.normalize(keys, dim=-1).to(self.device)

    TipAdapterF.build_model, TipAdapterF.build_keys = with_items, random_keys


def worker(args):
    import torch

    from tools.bench import rss_mb

    trainer, cfg, _ = build(args.worker, args)
    after_build = rss_mb()
    device = trainer.device
    cuda = device.type == "cuda"
    n_params = sum(p.numel() for n in trainer.get_model_names()
                   for p in trainer._models[n].parameters() if p.requires_grad)
    g = torch.Generator().manual_seed(0)
    features = args.input == "features"
    if features:  # what FEATURE_CACHE.TRAIN_VIEWS hands forward_train
        trainer._on_features = True
    dim = trainer.clip_weights.shape[1] if hasattr(trainer, "clip_weights") else None
    res = tuple(cfg.INPUT.SIZE)

    def batch():
        task = torch.randint(args.tasks, (args.batch,), generator=g)
        label = task * args.classes + torch.randint(args.classes, (args.batch,), generator=g)
        if features:
            from trainers.clip_model import embed_dim

            d = dim or embed_dim(trainer.clip_model)
            img = torch.nn.functional.normalize(torch.randn(args.batch, d, generator=g), dim=-1)
        else:
            img = torch.randn(args.batch, 3, *res, generator=g)
        return {"img": img, "label": label, "task": task}

    trainer.forward_backward(batch())  # warm-up
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
    print(json.dumps(dict(ms_per_step=ms, peak_mb=peak, trainable=n_params,
                          after_build_mb=None if cuda else after_build)))


def adapters_bench(args):
    from tabulate import tabulate

    rows, base = [], {}
    for label, trainer, kind in ROWS:
        cmd = [sys.executable, osp.abspath(__file__), "--worker", trainer, "--input", kind,
               "--arch", args.arch, "--tasks", str(args.tasks), "--classes", str(args.classes),
               "--shots", str(args.shots), "--batch", str(args.batch), "--steps", str(args.steps),
               "--device", args.device, "--prec", args.prec, "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                              env=dict(os.environ, PYTHONWARNINGS="ignore",
                                       OMP_NUM_THREADS=str(args.threads),
                                       MKL_NUM_THREADS=str(args.threads)))
        if proc.returncode != 0:
            raise SystemExit(f"error: {label} on {args.arch} failed:\n{proc.stderr[-2000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        base.setdefault(kind, r)
        rows.append([label, kind, f"{r['ms_per_step']:.1f}",
                     f"{r['ms_per_step'] / base[kind]['ms_per_step']:.3g}",
                     f"{r['peak_mb']:.0f}", f"{r['peak_mb'] / base[kind]['peak_mb']:.3g}",
                     "-" if r["after_build_mb"] is None else f"{r['after_build_mb']:.0f}",
                     f"{r['trainable']:,}"])
    mem = "peak GPU MB" if args.device == "cuda" else "peak RSS MB"
    print(f"arch {args.arch} (random weights), {args.tasks} task(s) x {args.classes} classes, "
          f"{args.shots} shots (Tip-Adapter-F keys: {args.tasks * args.classes * args.shots:,}), "
          f"batch {args.batch}, {args.steps} timed steps, device {args.device}"
          + (f" ({args.prec})" if args.device == "cuda" else "") + f", {args.threads} thread(s)")
    print(tabulate(rows, headers=["method", "input", "ms/step", "time vs CoOp", mem,
                                  "memory vs CoOp", "RSS after build MB", "trainable params"],
                   tablefmt="github", disable_numparse=True))


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--worker", required=True)
    p.add_argument("--input", choices=("features", "images"), required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--tasks", type=int, default=1)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--prec", default="fp16")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variant", default="NATA")  # tools/bench.py's config reads it
    args = p.parse_args(argv)
    worker(args)


if __name__ == "__main__":
    main()
