"""``python tools/bench.py --mode baselines``: what the SoftCPT table's baselines add,
side by side in one process with pinned threads, on a CLIP of a real architecture's
shapes (random weights) and synthetic tasks:

- every declaration with ``bench_against = "<method>"`` (ProGrad against CoOp): its
  training step against that method's, with the images through the encoder and from
  cached features;
- every trainer whose feature cache stores more than the pooled feature
  (``feature_kind``: PLOT's tokens): its step from cached features against the image
  encoder in the loop;
- PLOT's Sinkhorn over the (image, class) pairs of a batch at the backbone's shapes,
  batched against a loop over the pairs, and the host's stop check every 10 iterations
  against every one.

    python tools/bench.py --mode baselines --arch rn50 --tasks 1 --classes 10 --batch 8 \
        --steps 3 --threads 1

Timings alternate between the settings compared (A B A B ...), and the median of each
is reported, so a machine's load drifts over both alike.
"""
import statistics
import time

from tabulate import tabulate

MODE = "baselines"
HELP = ("ProGrad vs CoOp, PLOT's token cache vs the encoder in the loop, Sinkhorn batched "
        "vs a loop (benchmarks/baselines.py)")


def side_by_side(settings, steps, rounds=3):
    """{name: median seconds} of ``settings`` {name: callable}, interleaved."""
    times = {name: [] for name in settings}
    for fn in settings.values():
        fn()  # warm-up (allocations)
    for _ in range(rounds):
        for name, fn in settings.items():
            for _ in range(steps):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def step_fn(trainer, args, on_features, g):
    """One training step of ``trainer`` on a fixed synthetic batch (images, or their
    cached features when ``on_features``)."""
    import torch

    res = tuple(trainer.cfg.INPUT.SIZE)
    with torch.no_grad():
        image = torch.randn(args.batch, 3, *res, generator=g)
        feats = trainer.encode_image(image) if on_features else None
    label = torch.randint(args.tasks * args.classes, (args.batch,), generator=g)
    batch = {"img": feats if on_features else image, "label": label,
             "task": label // args.classes}

    def step():
        trainer._on_features = on_features
        try:
            trainer.forward_backward(batch)
        finally:
            trainer._on_features = False
    return step


def sinkhorn_rows(plot, args):
    import torch
    import torch.nn.functional as F

    from trainers.plot import sinkhorn

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        tokens = plot.encode_image(torch.randn(2, 3, *plot.cfg.INPUT.SIZE, generator=g))
    M, N = tokens.shape[1] // plot.dim - 1, plot.node.N
    P = args.batch * args.tasks * args.classes
    sim = F.normalize(torch.randn(P, M, 8, generator=g), dim=-1) @ \
        F.normalize(torch.randn(P, 8, N, generator=g), dim=-2)
    K = torch.exp(-(1 - sim) / plot.node.EPS)
    t = side_by_side({
        "batched": lambda: sinkhorn(K, 100, 1e-2, check_every=10),
        "every": lambda: sinkhorn(K, 100, 1e-2, check_every=1),
        # one problem at a time, the host checking at every iteration (upstream's sync)
        "loop": lambda: [sinkhorn(K[i:i + 1], 100, 1e-2, 1) for i in range(P)],
    }, max(1, args.steps // 2), rounds=2)
    return [[f"Sinkhorn, {P} pairs of {M}x{N}: batched (check every 10) vs per-pair loop",
             f"{1000 * t['batched']:.1f}", f"{1000 * t['loop']:.1f}",
             f"{t['loop'] / t['batched']:.1f}x faster"],
            ["Sinkhorn batched: host check every 10 vs every iteration (CPU: no device "
             "sync to save, the gain is on CUDA)", f"{1000 * t['batched']:.1f}",
             f"{1000 * t['every']:.1f}", f"{t['every'] / t['batched']:.2f}x"]]


def run(args):
    import torch

    from toolbox.engine import TRAINER_REGISTRY
    from toolbox.methods import get_method, load_methods
    from tools.bench import build_bench_trainer
    from trainers.backbones import canonical_name

    archs = args.arch if isinstance(args.arch, list) else [args.arch]
    if len(archs) > 1 or args.device != "cpu":
        raise SystemExit("error: --mode baselines times one backbone on the CPU; give one "
                         "--arch and no --device")
    args.arch = canonical_name(archs[0])
    args.threads = args.threads or 1
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"arch {args.arch} (random weights), {args.tasks} task(s) x {args.classes} classes, "
          f"batch {args.batch}, {args.steps} steps x 3 rounds (median), {args.threads} "
          "thread(s), device cpu")
    methods = load_methods()
    built = {}

    def trainer_of(name):
        if name not in built:
            built[name] = build_bench_trainer(name, args)[0]
        return built[name]

    rows = []
    for name, m in methods.items():
        base = getattr(m, "bench_against", None)
        if not base:
            continue
        b = get_method(base)
        for on_features, what in ((False, "images through the encoder"),
                                  (True, "cached image features")):
            t = side_by_side({"a": step_fn(trainer_of(name), args, on_features, g),
                              "b": step_fn(trainer_of(base), args, on_features, g)},
                             args.steps)
            rows.append([f"{m.label} vs {b.label} step, {what}", f"{1000 * t['a']:.1f}",
                         f"{1000 * t['b']:.1f}", f"{t['a'] / t['b']:.2f}x"])
    for name, m in methods.items():
        cls = TRAINER_REGISTRY.get(m.trainer)
        if not getattr(cls, "feature_kind", ""):
            continue
        tr = trainer_of(name)
        t = side_by_side({"cached": step_fn(tr, args, True, g),
                          "encoder": step_fn(tr, args, False, g)}, args.steps)
        rows.append([f"{m.label} step: cached {cls.feature_kind.split(' (')[0]} vs the image "
                     "encoder in the loop", f"{1000 * t['cached']:.1f}",
                     f"{1000 * t['encoder']:.1f}", f"{t['encoder'] / t['cached']:.2f}x faster"])
        if m.trainer == "PLOT":
            rows += sinkhorn_rows(tr, args)
    print(tabulate(rows, headers=["comparison", "ms (first)", "ms (second)", "ratio"],
                   tablefmt="github", disable_numparse=True))
