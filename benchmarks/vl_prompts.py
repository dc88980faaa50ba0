"""``python tools/bench.py --mode vl-prompts``: step time and memory of methods with a
prompted image tower, each with and without activation checkpointing of that tower
(the trainer's GRAD_CHECKPOINT key), as ratios against the first method given (e.g. a
text-only prompt method), on random weights of real architectures with synthetic
batches; each run in its own process (tools/bench.py --worker).

    python tools/bench.py --mode vl-prompts --methods BASELINE METHOD ... \\
        --arch vit_b16 vit_l14 --tasks 1 --classes 10 --batch 4 --steps 1

Without --methods: the comparison's methods that have the key. Wall time and the
process's CPU time per step (all threads; steadier than the wall clock on a shared
machine) are both shown. CPU memory is the process's peak RSS minus its RSS after the
trainer was built ("training MB": activations, gradients, optimizer state); CUDA
reports torch.cuda.max_memory_allocated over the timed steps.
"""
import json
import os
import os.path as osp
import subprocess
import sys

from tabulate import tabulate

MODE = "vl-prompts"
HELP = ("methods with a prompted image tower, with and without activation checkpointing, "
        "against the first --methods (benchmarks/vl_prompts.py)")
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def checkpoint_key(method, arch, tasks=1):
    """``TRAINER.<KEY>.GRAD_CHECKPOINT`` of the method's trainer, or None."""
    import trainers
    from toolbox.config import get_cfg_default
    from toolbox.engine import TRAINER_REGISTRY
    from tools.bench import method_setting

    key = getattr(TRAINER_REGISTRY.get(method_setting(method, arch, tasks)[2].trainer),
                  "prec_key", None)
    cfg = get_cfg_default()
    trainers.extend_cfg(cfg)
    if key and "GRAD_CHECKPOINT" in cfg.TRAINER[key]:
        return f"TRAINER.{key}.GRAD_CHECKPOINT"
    return None


def run_worker(method, arch, args, opts=()):
    """Time ``method`` on ``arch`` in its own process; its JSON result."""
    opts = list(getattr(args, "opts", None) or []) + list(opts)
    cmd = [sys.executable, osp.join(ROOT, "tools", "bench.py"), "--worker", method,
           "--arch", arch, "--tasks", str(args.tasks), "--classes", str(args.classes),
           "--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device,
           "--prec", args.prec, "--threads", str(args.threads)] + (["--opts", *opts] if opts else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONWARNINGS="ignore",
                                   OMP_NUM_THREADS=str(args.threads),
                                   MKL_NUM_THREADS=str(args.threads)))
    if proc.returncode != 0:
        raise SystemExit(f"error: {method} on {arch} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args):
    from tools.bench import default_methods, method_setting
    from trainers.backbones import canonical_name

    archs = [canonical_name(a) for a in args.arch]
    args.threads = args.threads or 2
    methods = args.methods
    if not methods or methods == default_methods():  # no --methods: those with the key
        methods = [n for n in default_methods() if checkpoint_key(n, archs[0])]
    rows = []
    for arch in archs:
        base = None
        for method in methods:
            decl, _, setting = method_setting(method, arch, args.tasks)
            label = decl.table_label(setting.variant)
            key = checkpoint_key(method, arch, args.tasks)
            for ckpt in ((False, True) if key else (False,)):
                r = run_worker(method, arch, args, [key, "True"] if ckpt else [])
                mem = r["peak_mb"] if args.device == "cuda" else r["peak_mb"] - r["after_build_mb"]
                cpu_ms = r.get("cpu_ms_per_step", float("nan"))
                if base is None:
                    base = (r["ms_per_step"], cpu_ms, max(mem, 1e-9))
                rows.append([arch, label + (" +ckpt" if ckpt else ""),
                             f"{r['ms_per_step']:.0f}", f"{r['ms_per_step'] / base[0]:.2f}",
                             f"{cpu_ms:.0f}", f"{cpu_ms / base[1]:.2f}",
                             f"{mem:.0f}", f"{mem / base[2]:.2f}", f"{r['trainable']:,}"])
                print(" | ".join(rows[-1]), flush=True)
    mem = "peak GPU MB" if args.device == "cuda" else "training MB (peak RSS - after build)"
    print(f"\n{args.tasks} task(s) x {args.classes} classes, batch {args.batch}, {args.steps} "
          f"timed steps, device {args.device}, {args.threads} thread(s), random weights; "
          f"ratios against the first method ({methods[0]}) on the same arch")
    print(tabulate(rows, headers=["arch", "method", "ms/step", "time ratio", "CPU ms/step",
                                  "CPU ratio", mem, "memory ratio", "trainable params"],
                   tablefmt="github", disable_numparse=True))
