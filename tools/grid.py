"""Run a grid of train.py runs: methods x variants x datasets x shots x seeds x
backbones, locally with K at once (CPU workers or one run per listed GPU) or on
a SLURM cluster (submitit job array).

    python tools/grid.py --methods METHOD:VARIANT,VARIANT METHOD ... \\
        --datasets demo --shots 1 4 --seeds 1 2 --workers 2
    python tools/grid.py --config grid.yaml --gpus 0,1,2,3
    python tools/grid.py --config grid.yaml --executor slurm --slurm-partition gpu \\
        --slurm-time 240 --slurm-gpus 1 --slurm-cpus 8 --slurm-mem 32

Every run is exactly the train.py command and output folder of scripts/main.sh (output/<dataset>/<Trainer>/<config>_<shots>shots/<variant>/seed<S>),
so tools/compare.py and tools/parse_results.py read the results unchanged. A run whose
results.json holds the same config digest is skipped; one whose digest differs is moved
aside to a hidden sibling folder (.seed<S>.old-<time>, never deleted) and run again; an
interrupted run (folder without results.json) resumes from its last checkpoint
(train.py --resume). A failing run does not stop the others.

The methods and their variants come from the method declarations (one in each
trainer file; python tools/methods.py lists them).

The grid YAML (--config) holds the same fields as the flags; flags given win:

    methods: {METHOD: [VARIANT, VARIANT], OTHER_METHOD: null}   # null: its default variant
    datasets: [demo]
    shots: [1, 4]
    seeds: [1, 2, 3]
    backbones: [tiny_vit]          # default: tiny_vit for demo datasets, rn50 otherwise
    opts: {OPTIM.MAX_EPOCH: 2}     # extra KEY VALUE overrides for every run
"""

import argparse
import os
import os.path as osp
import re
import shlex
import shutil
import signal
import sys
import time
from collections import OrderedDict

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from toolbox.errors import UserError, one_line  # noqa: E402
from tools.grid_exec import (check_slurm, error_line, fmt_time, run_local,  # noqa: E402
                             run_slurm, slurm_job_active, visible_gpus)
from tools.grid_plan import (Run, compute_digests, expand, plan,  # noqa: E402,F401
                             preflight)


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------

def results_table(runs):
    """Mean +- std over seeds of each experiment of the grid, over the grid's own seeds
    (tools/parse_results.py's table, restricted to the grid's run folders)."""
    from tools.parse_results import render
    from tools.results_io import read_results, summarize, Run as ResultRun

    exps = OrderedDict()
    for r in runs:
        path = osp.join(r.out, "results.json")
        if osp.isfile(path):
            exps.setdefault(osp.dirname(r.out), []).append(
                ResultRun(path, osp.dirname(r.out), r.seed, read_results(path)))
    return render([summarize(exp, rs) for exp, rs in exps.items()]) if exps else ""


def compare_tables(runs, shots, output_root):
    """tools/compare.py's table per (dataset, backbone) of the grid."""
    from tools import compare

    blocks = []
    for dataset, backbone in OrderedDict(((r.dataset, r.backbone), None) for r in runs):
        try:
            tables = compare.tables(compare.collect(output_root, dataset, backbone), shots)
            blocks.append(f"# {dataset}, {backbone}\n" + compare.render(tables))
        except UserError as e:
            blocks.append(f"# {dataset}, {backbone}: no table ({one_line(e)})")
    return "\n\n".join(blocks)



# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

SLURM_DEFAULTS = dict(slurm_time=240, slurm_gpus=0, slurm_cpus=4, slurm_mem=0, slurm_parallel=0)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="methods and their variants: python tools/methods.py")
    p.add_argument("--config", help="grid YAML (methods, datasets, shots, seeds, backbones, "
                   "opts, zs_seeds, tag)")
    p.add_argument("--methods", nargs="+", help="METHOD[:VARIANT,VARIANT...] ...")
    p.add_argument("--script-args", nargs="*", help="with one METHOD: the method's own "
                   "arguments of scripts/main.sh (e.g. a context length and position), which its "
                   "declaration turns into a variant")
    p.add_argument("--datasets", nargs="+", help="dataset config names (configs/datasets)")
    p.add_argument("--shots", nargs="+", help="shot counts (default 16)")
    p.add_argument("--seeds", nargs="+", help="seeds (default 1 2 3)")
    p.add_argument("--zs-seeds", nargs="+", help="seeds of the runs of methods that "
                   "train nothing, e.g. zero-shot (default: the first seed)")
    p.add_argument("--backbones", nargs="+",
                   help="backbone keys (default: tiny_vit on demo datasets, rn50 otherwise)")
    p.add_argument("--pretrained", help="OpenCLIP weights tag (MODEL.BACKBONE.PRETRAINED; "
                   "folders <backbone>@<tag>_...)")
    p.add_argument("--backbone-path", help="backbone checkpoint file (MODEL.BACKBONE.PATH)")
    p.add_argument("--opts", nargs="+", help="KEY VALUE overrides for every run")
    p.add_argument("--tag", help="suffix of the variant folder (<variant>_<tag>), to keep runs "
                   "with other --opts apart")
    p.add_argument("--data", default=os.environ.get("DATA", "./data"),
                   help="dataset root (default $DATA or ./data)")
    p.add_argument("--output-root", default="output", help="output root (default output)")
    p.add_argument("--executor", choices=("local", "slurm"),
                   default=os.environ.get("EXECUTOR") or "local")
    p.add_argument("--workers", type=int, default=1, help="local: runs at once on CPU")
    p.add_argument("--gpus", help="local: GPU ids, one run at a time on each (e.g. 0,1,2; "
                   "repeat an id to share a GPU)")
    p.add_argument("--python", default=sys.executable, help="interpreter for train.py")
    p.add_argument("--slurm-partition")
    p.add_argument("--slurm-time", type=int, help="minutes per run (default 240)")
    p.add_argument("--slurm-gpus", type=int, help="GPUs per run (default 0)")
    p.add_argument("--slurm-cpus", type=int, help="CPUs per run (default 4)")
    p.add_argument("--slurm-mem", type=int, help="GB per run (default 0: cluster default)")
    p.add_argument("--slurm-parallel", type=int, help="array tasks at once (default 0: all)")
    p.add_argument("--slurm-extra", nargs="+", help="more sbatch options as KEY=VALUE "
                   "(e.g. account=lab qos=short)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--no-preflight", action="store_true", help="start the runs without first "
                   "checking once that their data and weights are there")
    p.add_argument("--no-table", action="store_true", help="no result tables at the end")
    p.add_argument("--compare", action="store_true",
                   help="end with tools/compare.py's table per dataset and backbone (the "
                   "default when the grid has several methods or variants)")
    return p


def load_spec(args):
    spec = {}
    if args.config:
        import yaml
        try:
            with open(args.config) as f:
                spec = yaml.safe_load(f) or {}
        except OSError as e:
            raise UserError(f"cannot read grid file {args.config}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise UserError(f"grid file {args.config} is not valid YAML: {one_line(e)}") \
                from None
        if not isinstance(spec, dict):
            raise UserError(f"grid file {args.config} must be a mapping (methods:, datasets:, "
                            "...)")
        fields = ("methods", "datasets", "shots", "seeds", "zs_seeds", "backbones", "opts",
                  "tag", "pretrained", "backbone_path")
        unknown = set(spec) - set(fields)
        if unknown:
            raise UserError(f"unknown field(s) {', '.join(sorted(unknown))} in {args.config}; "
                            f"use {', '.join(fields)}")
    for key in ("methods", "datasets", "shots", "seeds", "zs_seeds", "backbones", "opts",
                "tag", "pretrained", "backbone_path"):
        value = getattr(args, key)
        if value:
            spec[key] = value
    if args.script_args is not None:
        spec["methods"] = [script_method(spec.get("methods") or [], args.script_args)]
    return spec


def script_method(methods, script_args):
    """'METHOD:VARIANT' from one METHOD and its scripts/main.sh arguments."""
    from toolbox.methods import get_method, load_methods

    if len(methods) != 1 or ":" in str(methods[0]):
        raise UserError("--script-args goes with exactly one --methods METHOD (no :VARIANT)")
    load_methods()
    method = get_method(methods[0])
    return f"{method.name}:{method.variant_from_args([a for a in script_args if a != ''])}"


def _stop(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def check_executor_flags(args):
    """--slurm-* flags without --executor slurm would be ignored: say so instead."""
    if args.executor == "slurm":
        return
    given = [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
             if k.startswith("slurm_") and v is not None]
    if given:
        raise UserError(f"{' '.join(given)} only apply with --executor slurm (EXECUTOR=slurm); "
                        "add it, or drop them")


def main(argv=None):
    import warnings

    warnings.formatwarning = lambda message, *rest, **kw: f"warning: {message}\n"
    args = get_parser().parse_args(argv)
    try:
        check_executor_flags(args)
        for key, value in SLURM_DEFAULTS.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        spec = load_spec(args)
        # a first line at once: planning imports torch and every trainer (seconds)
        print(f"Planning the grid ({' '.join(map(str, spec.get('methods') or []))} on "
              f"{' '.join(map(str, spec.get('datasets') or []))})...", flush=True)
        runs = expand(spec, data=args.data, output_root=args.output_root)
        gpus = None
        if args.executor == "slurm":
            check_slurm()
        elif args.gpus is not None:
            ids = [g for g in re.split(r"[,\s]+", args.gpus.strip()) if g]
            if not ids:
                raise UserError(f"--gpus / GPUS names no GPU ('{args.gpus}'); give ids like "
                                "0,1 or leave it out to run on the CPU")
            gpus = visible_gpus(ids)

        if args.workers < 1:
            raise UserError(f"--workers must be at least 1, got {args.workers}")
        # An absolute interpreter: a SLURM job (or a worker with another PATH) must find
        # the same Python, with torch, as the one the grid was started with.
        python = shutil.which(args.python)
        if python is None:
            raise UserError(f"--python / PYTHON: no interpreter '{args.python}' found; give "
                            "the path of the Python that has the requirements installed")
        args.python = osp.abspath(python)
        compute_digests(runs)
        moved = plan(runs, dry_run=True, job_active=slurm_job_active)  # (nothing moved yet)
        if not args.dry_run and not args.no_preflight:
            preflight(runs)
            moved = plan(runs, job_active=slurm_job_active)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    todo = [r for r in runs if r.action not in ("skip", "running")]
    running = [r for r in runs if r.action == "running"]
    for r in runs:
        if r.action == "skip":
            r.status = "skipped"
    print(f"Grid: {len(runs)} runs, {sum(r.action == 'skip' for r in runs)} finished already "
          f"(skipped), {len(todo)} to run"
          + (f" ({sum(r.action == 'resume' for r in todo)} resumed)" if todo else "")
          + (f", {len(running)} still running from an earlier call (left alone)"
             if running else ""), flush=True)
    for r in running:
        print(f"  running: {r.out} ({r.owner})", flush=True)
    for old, new in moved:
        print(f"Config changed: moved {old} aside to {new}", flush=True)
    if args.dry_run:
        for r in runs:
            print(f"[{r.action}] " + " ".join(shlex.quote(c) for c in
                                             r.command(args.python, r.action == "resume")))
        return 0
    t0 = time.time()
    signal.signal(signal.SIGTERM, _stop)  # kill <grid pid>: stop its runs too, as Ctrl-C
    try:
        if todo and args.executor == "slurm":
            run_slurm(todo, args, args.python)
        elif todo:
            run_local(todo, args.workers, gpus, args.python)
    except KeyboardInterrupt:
        if args.executor != "slurm":  # (run_slurm said what happens to its jobs)
            print("Interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    failed = [r for r in runs if r.status == "failed"]
    done = sum(r.status == "done" for r in runs)
    print(f"\nGrid finished in {fmt_time(time.time() - t0)}: {done} done, "
          f"{sum(r.action == 'skip' for r in runs)} skipped, {len(failed)} failed"
          + (f", {len(running)} still running in SLURM (run the same command again when "
             "they end)" if running else ""))
    for r in failed:
        why = error_line(r.log)
        print(f"  failed: {r.out} (exit {r.rc}); log: {r.log}" + (f"\n    {why}" if why else ""))
    if not args.no_table:
        table = results_table(runs)
        if table:
            print("\nMean ± std over seeds of the grid's runs:\n" + table)
        # several methods or variants: tools/compare.py's side-by-side table too
        compared = {(r.method, osp.basename(osp.dirname(r.out))) for r in runs}
        if args.compare or len(compared) > 1:
            shots = sorted({r.shots for r in runs if r.shots > 0}) or [0]
            print("\n" + compare_tables(runs, shots, args.output_root))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
