"""MVLPT's source-to-target protocol: learn a prompt on a source suite, initialise every
target task from it (the source runs' best-val checkpoints averaged over seeds, upstream's
avg_ckpt.py), fine-tune each target task alone, and compare with the same target runs from
scratch.

    python tools/transfer.py --source general10 --target plant6 --shots 16 --method METHOD
    python tools/transfer.py --source demo:DemoDigit,DemoParity --target demo:DemoMagnitude \\
        --shots 2 --method METHOD[:VARIANT] --seeds 1 2

SOURCE and TARGET are dataset configs (configs/datasets/<name>.yaml), optionally with
':TASK,TASK' to pick tasks of a suite (DATASET.TASKS). Works with every method whose
trainable weights transfer (MODEL.INIT_FROM loads each tensor whose name and shape fit:
a shared prompt context, a meta network, ...; see trainers/transfer_init.py).

Runs go through tools/grid.py (same output layout, finished runs skipped, interrupted ones
resumed): the source runs under <output-root>/<source dataset>/..., the target runs under
<output-root>/<target dataset>/.../<variant>_<task>_scratch|from-<source>/seed<S>. The table
(per target task: from scratch, the source prompt without fine-tuning, fine-tuned from the
source, and the gain) is printed and written to <output-root>/transfer_<source>_to_<target>
_<method>[-<variant>]_<shots>shots.{md,json}.
"""
import argparse
import json
import os
import os.path as osp
import re
import sys
from collections import OrderedDict

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from toolbox.errors import UserError, one_line  # noqa: E402

CONFIGS = osp.join(ROOT, "configs")


def parse_dataset(text):
    """'demo:DemoDigit,DemoParity' -> ('demo', ['DemoDigit', 'DemoParity'])."""
    name, _, tasks = text.partition(":")
    if not re.fullmatch(r"[A-Za-z0-9_]+", name or ""):
        raise UserError(f"bad dataset '{text}'; give a config name of configs/datasets "
                        "(e.g. general10 or demo:DemoDigit,DemoParity)")
    if not osp.isfile(osp.join(CONFIGS, "datasets", name + ".yaml")):
        have = sorted(f[:-5] for f in os.listdir(osp.join(CONFIGS, "datasets")))
        raise UserError(f"no dataset config configs/datasets/{name}.yaml; available: "
                        f"{' '.join(have)}")
    return name, [t for t in tasks.split(",") if t]


def tasks_of(dataset, picked=()):
    """The task names of a dataset config (a suite's members, DATASET.TASKS-style picks)."""
    import yaml

    import datasets  # noqa: F401  (registers the datasets)
    from toolbox.data.datasets import DATASET_REGISTRY
    from toolbox.data.datasets.multitask import MultiTaskDataset, select_tasks

    with open(osp.join(CONFIGS, "datasets", dataset + ".yaml")) as f:
        name = ((yaml.safe_load(f) or {}).get("DATASET") or {}).get("NAME", "")
    cls = DATASET_REGISTRY.get(name)
    if isinstance(cls, type) and issubclass(cls, MultiTaskDataset):
        return list(select_tasks(cls.members, list(picked)))
    own = getattr(cls, "task_name", "") or name
    if picked and list(picked) != [own]:
        raise UserError(f"dataset {dataset} is the single task {own}; drop ':{','.join(picked)}'")
    return [own]


def make_runs(method, dataset, tasks, shots, args, tag, extra=(), eval_only=False):
    """tools/grid.py's runs (one per seed) of METHOD[:VARIANT] on ``dataset`` restricted
    to ``tasks``, in the folder variant ``<variant>_<tag>``."""
    from tools.grid_plan import expand

    opts = (["DATASET.TASKS", repr(list(tasks))] if tasks else []) + list(extra) + list(args.opts)
    spec = {"methods": [method], "datasets": [dataset], "shots": [shots], "seeds": args.seeds,
            "zs_seeds": args.seeds, "backbones": [args.backbone], "opts": opts, "tag": tag,
            "pretrained": args.pretrained}
    runs = expand(spec, data=args.data, output_root=args.output_root)
    if eval_only:  # the weights as loaded (MODEL.INIT_FROM), evaluated without training
        for r in runs:
            r.argv = ["--eval-only"] + r.argv
    return runs


def execute(runs, args, what):
    from tools.grid_exec import run_local
    from tools.grid_plan import compute_digests, plan

    compute_digests(runs)
    plan(runs)
    todo = [r for r in runs if r.action not in ("skip", "running")]
    print(f"{what}: {len(runs)} runs, {len(runs) - len(todo)} finished already", flush=True)
    if todo:
        run_local(todo, args.workers, None, sys.executable, echo=False)
    failed = [r for r in todo if r.status == "failed"]
    if failed:
        raise UserError(f"{len(failed)} {what.lower()} run(s) failed, e.g. {failed[0].out} (log: "
                        f"{failed[0].log}); fix that and run the same command again")


def value(run):
    """The run's first task's metric (target runs hold one task)."""
    with open(osp.join(run.out, "results.json")) as f:
        return json.load(f)["tasks"][0]["value"]


def mean_std(xs):
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
    return m, sd


def tag_of(name, tasks):
    return name + (("-" + "+".join(tasks)) if tasks else "")


def transfer(args):
    from tabulate import tabulate

    from tools.grid_plan import default_backbone
    from trainers.backbones import canonical_name

    source, source_tasks = parse_dataset(args.source)
    target, target_tasks = parse_dataset(args.target)
    args.backbone = canonical_name(args.backbone or default_backbone(target))
    backbone = args.backbone
    shots, source_shots = args.shots, args.source_shots or args.shots
    method, variant = args.method.partition(":")[::2]
    picked = tasks_of(source, source_tasks)
    targets = tasks_of(target, target_tasks)
    # 1. the source prompt, one run per seed
    src_runs = make_runs(args.method, source, source_tasks, source_shots, args,
                         tag_of("tasks", source_tasks) if source_tasks else "")
    execute(src_runs, args, "Source")
    init = ["MODEL.INIT_FROM", repr([osp.abspath(r.out) for r in src_runs])]
    from_tag = "from-" + tag_of(source, source_tasks)
    # 2. every target task alone: from scratch, the source prompt as is, fine-tuned from it
    rows, table = [], OrderedDict()
    target_runs = {}
    for t in targets:
        target_runs[t, "scratch"] = make_runs(args.method, target, [t], shots, args,
                                              f"{t}_scratch")
        target_runs[t, "source"] = make_runs(args.method, target, [t], shots, args,
                                             f"{t}_{from_tag}_notuning", init, eval_only=True)
        target_runs[t, "tuned"] = make_runs(args.method, target, [t], shots, args,
                                            f"{t}_{from_tag}", init)
    execute([r for rs in target_runs.values() for r in rs], args, "Target")
    for t in targets:
        cells = {k: mean_std([value(r) for r in target_runs[t, k]])
                 for k in ("scratch", "source", "tuned")}
        table[t] = {k: {"mean": m, "std": sd} for k, (m, sd) in cells.items()}
        gain = cells["tuned"][0] - cells["scratch"][0]
        table[t]["gain"] = gain
        rows.append([t] + [f"{cells[k][0]:.2f} ± {cells[k][1]:.2f}"
                           for k in ("scratch", "source", "tuned")] + [f"{gain:+.2f}"])
    means = {k: sum(table[t][k]["mean"] for t in targets) / len(targets)
             for k in ("scratch", "source", "tuned")}
    rows.append(["mean"] + [f"{means[k]:.2f}" for k in ("scratch", "source", "tuned")]
                + [f"{means['tuned'] - means['scratch']:+.2f}"])
    title = (f"{method}{':' + variant if variant else ''}: {tag_of(source, source_tasks)} "
             f"({len(picked)} tasks, {source_shots} shots) -> {tag_of(target, target_tasks)}, "
             f"{shots} shots, {backbone}, seeds {' '.join(map(str, args.seeds))}")
    text = tabulate(rows, headers=["target task", "from scratch", "source prompt, no tuning",
                                   "fine-tuned from source", "gain"],
                    tablefmt="github", disable_numparse=True)
    print(f"\n{title}\n\n{text}")
    stem = osp.join(args.output_root, f"transfer_{tag_of(source, source_tasks)}_to_"
                    f"{tag_of(target, target_tasks)}_{method}{'-' + variant if variant else ''}_"
                    f"{shots}shots")
    os.makedirs(args.output_root, exist_ok=True)
    from toolbox.utils import atomic_write

    atomic_write(stem + ".md", lambda f: f.write(f"{title}\n\n{text}\n"))
    atomic_write(stem + ".json", lambda f: json.dump(
        {"title": title, "source": [osp.abspath(r.out) for r in src_runs], "tasks": table,
         "mean": means}, f, indent=1))
    return table


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", required=True, help="source dataset config [:TASK,TASK]")
    p.add_argument("--target", required=True, help="target dataset config [:TASK,TASK]")
    p.add_argument("--shots", type=int, required=True, help="target shots per class")
    p.add_argument("--source-shots", type=int, default=0, help="source shots (default: --shots)")
    p.add_argument("--backbone", default="", help="default: tiny_vit on demo, rn50 otherwise")
    p.add_argument("--pretrained", default="", help="OpenCLIP weights tag ('random': seeded)")
    p.add_argument("--method", required=True,
                   help="METHOD[:VARIANT] (python tools/methods.py lists them)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--data", default=os.environ.get("DATA", "./data"))
    p.add_argument("--output-root", default="output")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--opts", nargs="*", default=[], help="KEY VALUE overrides for every run")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    import warnings
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    try:
        if len(args.opts) % 2:
            raise UserError(f"--opts must be KEY VALUE pairs, got {' '.join(args.opts)}")
        transfer(args)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
