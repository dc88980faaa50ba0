"""``tools/bench.py --mode grid``: wall time of a demo grid (tools/grid.py, local
executor) with 1 worker and with K workers, side by side.

Each round runs the same grid (``--grid-methods`` x ``--grid-seeds``, ``--grid-shots``
shots, ``--grid-epochs`` epochs, on the built-in demo with the tiny CLIP) into a fresh
folder once per worker count, in alternating order (1, K, K, 1, ...), so a change of
machine load hits both. Every train.py has ``--threads`` torch/OMP threads (pinned,
default 1), so K workers use K cores. The results.json metrics of all grids must be
identical. Reported: each grid's wall time and the median ratio K / 1.
"""
import json
import os
import os.path as osp
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _metrics(root):
    out = {}
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if "results.json" in files:
            with open(osp.join(dirpath, "results.json")) as f:
                r = json.load(f)
            out[osp.relpath(dirpath, root)] = (r["overall"], [t["value"] for t in r["tasks"]])
    return out


def grid_bench(args):
    from tabulate import tabulate

    from datasets.demo import ensure_demo_images

    work = args.work_dir or tempfile.mkdtemp(prefix="bench-grid-")
    os.makedirs(work, exist_ok=True)
    data = osp.join(work, "data")
    from toolbox.methods import load_methods

    registry = load_methods()
    by_trainer = {m.trainer.lower(): name for name, m in registry.items()}
    methods = [m.lower() if m.lower() in registry else by_trainer.get(m.lower(), m)
               for m in args.grid_methods]
    k = args.workers
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONWARNINGS="ignore")
    spec = ["--methods", *methods, "--datasets", "demo", "--shots", str(args.grid_shots),
            "--seeds", *map(str, args.grid_seeds), "--data", data, "--no-table",
            "--opts", "OPTIM.MAX_EPOCH", str(args.grid_epochs), "FEATURE_CACHE.ENABLED", "False"]
    ensure_demo_images(osp.join(data, "demo_digits"))
    # the split file and few-shot draws are written by an untimed first grid
    warm = osp.join(work, "warmup")
    os.makedirs(warm, exist_ok=True)
    subprocess.run([sys.executable, osp.join(ROOT, "tools", "grid.py"), "--methods", methods[0],
                    *spec[len(methods) + 1:], "OPTIM.MAX_EPOCH", "1"], cwd=warm, env=env,
                   capture_output=True, check=True)
    load_before = os.getloadavg()[0]
    times = {1: [], k: []}
    metrics = []
    order = []
    for rnd in range(args.rounds):
        order += [1, k] if rnd % 2 == 0 else [k, 1]
    for i, workers in enumerate(order):
        out = osp.join(work, f"grid{i}-w{workers}")
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, osp.join(ROOT, "tools", "grid.py"), *spec,
                               "--workers", str(workers)], cwd=out, env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"error: the grid with {workers} worker(s) failed:\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        times[workers].append(seconds)
        metrics.append(_metrics(osp.join(out, "output")))
        print(f"grid {i + 1}/{len(order)}: {workers} worker(s) {seconds:.0f} s", flush=True)
    same = all(m == metrics[0] for m in metrics) and bool(metrics[0])
    if not same:
        raise SystemExit("error: the grids' results.json metrics differ")
    pairs = [times[k][i] / times[1][i] for i in range(args.rounds)]
    n_runs = len(metrics[0])
    print(f"demo grid: {n_runs} runs ({', '.join(methods)}; seeds "
          f"{' '.join(map(str, args.grid_seeds))}; {args.grid_shots} shots; "
          f"{args.grid_epochs} epochs), {args.threads} thread(s) per run, "
          f"{os.cpu_count()} CPUs, 1-minute load average {load_before:.1f} before and "
          f"{os.getloadavg()[0]:.1f} after; results.json metrics identical in every grid")
    print(tabulate([[f"{args.threads}", " ".join(f"{t:.0f}" for t in times[1]),
                     " ".join(f"{t:.0f}" for t in times[k]),
                     " ".join(f"{p:.2f}" for p in pairs), f"{statistics.median(pairs):.2f}"]],
                   headers=["threads per run", "1 worker s", f"{k} workers s",
                            f"ratio {k}/1 per round", "median"],
                   tablefmt="github", disable_numparse=True))
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
