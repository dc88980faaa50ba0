"""``python tools/bench.py --mode baselines``: the costs the SoftCPT table's
baselines add, side by side in one process with pinned threads, on a CLIP of a
real architecture's shapes (random weights) and synthetic tasks:

- ProGrad's training step against CoOp's (the same prompt learner; ProGrad adds
  the teacher's logits, a second backward pass and the projection), with the
  images through the encoder and from cached features;
- PLOT's step from cached tokens against the image encoder in the loop;
- Sinkhorn batched over all (image, class) pairs against a loop over the pairs.

Timings alternate between the settings compared (A B A B ...), and the median
of each is reported, so a machine's load drifts over both alike.
"""
import statistics
import time

from tabulate import tabulate


def _timed(fn, steps):
    out = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def side_by_side(settings, steps, rounds=3):
    """{name: median seconds} of ``settings`` {name: callable}, interleaved."""
    times = {name: [] for name in settings}
    for name, fn in settings.items():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in settings.items():
            times[name] += _timed(fn, steps)
    return {name: statistics.median(t) for name, t in times.items()}


def _step_fn(trainer, args, on_features, g):
    import torch

    res = tuple(trainer.cfg.INPUT.SIZE)
    n_classes = args.tasks * args.classes
    with torch.no_grad():
        image = torch.randn(args.batch, 3, *res, generator=g)
        feats = trainer.encode_image(image) if on_features else None
    label = torch.randint(n_classes, (args.batch,), generator=g)
    batch = {"img": feats if on_features else image, "label": label,
             "task": label // args.classes}

    def step():
        trainer._on_features = on_features
        try:
            trainer.forward_backward(batch)
        finally:
            trainer._on_features = False
    return step


def baselines_bench(args):
    import torch

    from tools.bench import build_bench_trainer
    from trainers.plot import sinkhorn

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"arch {args.arch} (random weights), {args.tasks} task(s) x {args.classes} classes, "
          f"batch {args.batch}, {args.steps} steps x 3 rounds (median), {args.threads} thread(s), "
          f"device cpu")
    rows = []
    trainers = {m: build_bench_trainer(m, args)[0] for m in ("CoOp", "ProGrad", "PLOT")}
    for on_features, what in ((False, "images through the encoder"),
                              (True, "cached image features")):
        t = side_by_side({m: _step_fn(trainers[m], args, on_features, g)
                          for m in ("CoOp", "ProGrad")}, args.steps)
        rows.append([f"ProGrad vs CoOp step, {what}", f"{1000 * t['ProGrad']:.1f}",
                     f"{1000 * t['CoOp']:.1f}", f"{t['ProGrad'] / t['CoOp']:.2f}x"])
    plot = trainers["PLOT"]
    t = side_by_side({"tokens": _step_fn(plot, args, True, g),
                      "images": _step_fn(plot, args, False, g)}, args.steps)
    rows.append(["PLOT step: cached tokens vs image encoder in the loop",
                 f"{1000 * t['tokens']:.1f}", f"{1000 * t['images']:.1f}",
                 f"{t['images'] / t['tokens']:.2f}x faster"])
    # Sinkhorn over the pairs of a batch: B x C problems of M local features x N prompts
    with torch.no_grad():
        tokens = plot.encode_image(torch.randn(2, 3, *plot.cfg.INPUT.SIZE, generator=g))
    M = tokens.shape[1] // plot.dim - 1
    N, P = plot.node.N, args.batch * args.tasks * args.classes
    sim = torch.nn.functional.normalize(torch.randn(P, M, 8, generator=g), dim=-1) @ \
        torch.nn.functional.normalize(torch.randn(P, 8, N, generator=g), dim=-2)
    K = torch.exp(-(1 - sim) / 0.1)

    def loop():  # one problem at a time, upstream's host check at every iteration
        return torch.stack([sinkhorn(K[i:i + 1], 100, 1e-2, 1)[0] for i in range(P)])

    def per_iteration():
        return sinkhorn(K, 100, 1e-2, check_every=1)

    def batched():
        return sinkhorn(K, 100, 1e-2, check_every=10)

    t = side_by_side({"batched": batched, "every": per_iteration, "loop": loop},
                     max(1, args.steps // 2), rounds=2)
    rows.append([f"Sinkhorn, {P} pairs of {M}x{N}: batched (check every 10) vs per-pair loop",
                 f"{1000 * t['batched']:.1f}", f"{1000 * t['loop']:.1f}",
                 f"{t['loop'] / t['batched']:.1f}x faster"])
    rows.append(["Sinkhorn batched: host check every 10 vs every iteration (CPU: no device "
                 "sync to save, the gain is on CUDA)",
                 f"{1000 * t['batched']:.1f}", f"{1000 * t['every']:.1f}",
                 f"{t['every'] / t['batched']:.2f}x"])
    print(tabulate(rows, headers=["comparison", "ms (first)", "ms (second)", "ratio"],
                   tablefmt="github", disable_numparse=True))
