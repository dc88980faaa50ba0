"""``python tools/bench.py --mode baselines``: what a method costs against the
method it builds on, side by side in one process with pinned threads, on a CLIP
of a real architecture's shapes (random weights) and synthetic tasks. What is
compared comes from the declarations and trainers (no method is named here):

- every declaration with ``bench_against = "<method>"``: its training step
  against that method's, with the images through the encoder and from cached
  features;
- every trainer whose feature cache stores more than the pooled feature
  (``feature_kind``): its step from cached features against the image encoder
  in the loop;
- every trainer with a ``bench_rows(args, timer)`` class method: the rows it
  adds (e.g. a batched algorithm against a loop).

Timings alternate between the settings compared (A B A B ...), and the median
of each is reported, so a machine's load drifts over both alike.
"""
import statistics
import time

from tabulate import tabulate


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

    from toolbox.engine import TRAINER_REGISTRY
    from toolbox.methods import get_method, load_methods
    from tools.bench import build_bench_trainer

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"arch {args.arch} (random weights), {args.tasks} task(s) x {args.classes} classes, "
          f"batch {args.batch}, {args.steps} steps x 3 rounds (median), {args.threads} "
          "thread(s), device cpu")
    methods = load_methods()
    built = {}

    def trainer_of(name):
        if name not in built:
            built[name] = build_bench_trainer(get_method(name).trainer, args)[0]
        return built[name]

    rows = []
    for name, m in methods.items():
        base = getattr(m, "bench_against", None)
        if not base:
            continue
        a, b = get_method(name), get_method(base)
        for on_features, what in ((False, "images through the encoder"),
                                  (True, "cached image features")):
            t = side_by_side({a.label: step_fn(trainer_of(name), args, on_features, g),
                              b.label: step_fn(trainer_of(base), args, on_features, g)},
                             args.steps)
            rows.append([f"{a.label} vs {b.label} step, {what}", f"{1000 * t[a.label]:.1f}",
                         f"{1000 * t[b.label]:.1f}", f"{t[a.label] / t[b.label]:.2f}x"])
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
    for name, m in methods.items():
        extra = getattr(TRAINER_REGISTRY.get(m.trainer), "bench_rows", None)
        if extra is not None:
            rows += extra(trainer_of(name), args, side_by_side)
    print(tabulate(rows, headers=["comparison", "ms (first)", "ms (second)", "ratio"],
                   tablefmt="github", disable_numparse=True))
