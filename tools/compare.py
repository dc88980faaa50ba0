"""Methods side by side on one dataset: per task and overall, for each shot
count, plus a plot of overall accuracy against shots per method.

    python tools/compare.py --dataset demo --shots 1 4 --backbone tiny_vit \
        [--root output] [--plot output/demo/compare.png] [--csv compare.csv]

Reads output/<dataset>/<Trainer>/<config>_<shots>shots/<variant>/seed<S>/
results.json (scripts/common.sh's layout). The backbone is the config-name
key used by the scripts (rn50, vit_b16, tiny_vit, ...). Methods trained with
no images (zero-shot, stored as 0 shots) appear in every shot column and as
a dashed line in the plot.
"""
import argparse
import csv
import io
import os.path as osp
import sys
from collections import OrderedDict

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tabulate import tabulate  # noqa: E402

from toolbox.errors import UserError, one_line  # noqa: E402
from toolbox.utils import atomic_write  # noqa: E402
from tools.results_io import (describe, find_runs, fmt_mean_std, group_runs,  # noqa: E402
                              summarize, write_output)

# The paper's names for the baselines.
LABELS = {("CoOpMT", "shared"): "CoOp-MT", ("CoOpMT", "task"): "CoOp-CA",
          ("CoOpMT", "class"): "CoOp-CS", ("ZeroshotCLIP", "task"): "ZS-CLIP",
          ("LinearProbeCLIP", "logreg"): "LP-CLIP", ("CoCoOp", "nctx4_ctxv1"): "CoCoOp"}


def method_label(trainer, variant):
    if (trainer, variant) in LABELS:
        return LABELS[(trainer, variant)]
    if trainer == "SoftCPT":
        return f"SoftCPT-{variant}"
    return f"{trainer}/{variant}"


def uses_backbone(config, backbone):
    """Whether a config folder name (``<backbone>[@<weights tag>]_<schedule>``)
    runs ``backbone`` (a canonical name, optionally with ``@<tag>``)."""
    if backbone is None or config == backbone or config.startswith(backbone + "_"):
        return True
    return "@" not in backbone and config.startswith(backbone + "@")


def canonical_backbone(name):
    """``name`` (any alias, optionally ``@<tag>``) as the canonical backbone name."""
    if name is None:
        return None
    from trainers.backbones import canonical_name

    base, at, tag = name.partition("@")
    return canonical_name(base) + at + tag


def collect(root, dataset, backbone=None, ddof=0):
    """{method: {shots: Summary}} for the dataset's experiments on ``backbone``."""
    folder = osp.join(root, dataset)
    if not osp.isdir(folder):
        raise UserError(f"no results for dataset '{dataset}' under {root} ({folder} does not "
                        "exist); run scripts/compare_all.sh first")
    found = OrderedDict()
    configs = {}
    for exp, runs in group_runs(find_runs(folder)).items():
        info = describe(osp.join(dataset, exp))
        if info["trainer"] is None or not uses_backbone(info["config"], backbone):
            continue
        label = method_label(info["trainer"], info["variant"])
        configs.setdefault(label, set()).add(info["config"])
        found.setdefault((label, info["config"]), {})[info["shots"]] = summarize(exp, runs, ddof)
    methods = OrderedDict()
    for (label, config), by_shots in sorted(found.items()):
        # the same method under several configs (e.g. CoOp ep50 and ep200): name the config
        name = label if len(configs[label]) == 1 else f"{label} [{config}]"
        methods[name] = by_shots
    if not methods:
        raise UserError(f"no runs of backbone '{backbone}' under {folder}; check --backbone "
                        "(a backbone name: rn50, vit_b16, tiny_vit, open_clip:ViT-B-32, ...)")
    return methods


def at_shots(by_shots, shots):
    """The summary for ``shots``; a zero-shot method's summary for any shots."""
    if shots in by_shots:
        return by_shots[shots]
    if set(by_shots) == {0}:
        return by_shots[0]
    return None


def tables(methods, shots_list):
    """{shots: (headers, rows)}: rows = tasks then overall, columns = methods."""
    out = OrderedDict()
    for shots in shots_list:
        present = [(m, at_shots(b, shots)) for m, b in methods.items()]
        present = [(m, s) for m, s in present if s is not None]
        if not present:
            continue
        task_names = []
        for _, s in present:
            task_names += [t for t in s.tasks if t not in task_names]
        rows = []
        for task in task_names + ["overall"]:
            row = [task]
            for _, s in present:
                entry = s.overall if task == "overall" else s.tasks.get(task)
                row.append("-" if entry is None else
                           fmt_mean_std(entry["mean"], entry["std"], entry["n"]))
            rows.append(row)
        out[shots] = (["task"] + [m for m, _ in present], rows)
    return out


def render(all_tables, tablefmt="github"):
    return "\n\n".join(f"## {shots} shots\n" + tabulate(rows, headers=headers, tablefmt=tablefmt,
                                                        disable_numparse=True)
                       for shots, (headers, rows) in all_tables.items())


def to_csv(all_tables):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["shots", "task", "method", "mean ± std"])
    for shots, (headers, rows) in all_tables.items():
        for row in rows:
            for method, cell in zip(headers[1:], row[1:]):
                writer.writerow([shots, row[0], method, cell])
    return buf.getvalue()


def plot(methods, shots_list, path, title=""):
    """Overall accuracy (mean ± std over seeds) against shots, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    # tab20 colours and a cycle of markers: a dozen methods stay distinguishable
    colors = plt.get_cmap("tab20").colors
    markers = "osD^vP*Xh<>p"
    for i, (name, by_shots) in enumerate(methods.items()):
        if set(by_shots) == {0}:
            ax.axhline(by_shots[0].overall["mean"], linestyle="--", color="gray", label=name)
            continue
        xs = [s for s in shots_list if s in by_shots]
        if not xs:
            continue
        ys = [by_shots[s].overall["mean"] for s in xs]
        es = [by_shots[s].overall["std"] for s in xs]
        ax.errorbar(xs, ys, yerr=es, marker=markers[i % len(markers)], capsize=3,
                    color=colors[i % len(colors)], label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots_list)
    ax.set_xticklabels([str(s) for s in shots_list])
    ax.set_xlabel("shots per class")
    ax.set_ylabel("overall accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), mode="wb")
    plt.close(fig)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help="dataset config name, e.g. demo, fewshot44")
    p.add_argument("--shots", type=int, nargs="+", required=True, help="e.g. 1 2 4 8 16")
    p.add_argument("--backbone", default=None, help="backbone name or alias (rn50, vit_b16, "
                   "tiny_vit, open_clip:ViT-B-32[@<tag>], ...); default: all")
    p.add_argument("--root", default="output", help="the scripts' output folder")
    p.add_argument("--plot", help="write the accuracy-vs-shots plot to this PNG file")
    p.add_argument("--csv", help="also write the tables as CSV to this file")
    p.add_argument("--format", default="github", help="tabulate table format")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        if any(s < 1 for s in args.shots):
            raise UserError("--shots must be positive (zero-shot results join every column)")
        args.backbone = canonical_backbone(args.backbone)
        methods = collect(args.root, args.dataset, args.backbone)
        all_tables = tables(methods, args.shots)
        if not all_tables:
            raise UserError(f"no results for shots {args.shots} of {args.dataset}; found "
                            f"{sorted({s for b in methods.values() for s in b})}")
        print(render(all_tables, args.format))
        if args.csv:
            write_output(args.csv, lambda: atomic_write(args.csv, lambda f: f.write(
                to_csv(all_tables))), "--csv")
            print(f"CSV written to {args.csv}")
        if args.plot:
            title = f"{args.dataset}" + (f" ({args.backbone})" if args.backbone else "")
            write_output(args.plot, lambda: plot(methods, args.shots, args.plot, title), "--plot")
            print(f"Plot written to {args.plot}")
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
