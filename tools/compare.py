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
from tools.results_io import (ALL_IMAGES, describe, find_runs, fmt_mean_std,  # noqa: E402
                              group_runs, shots_label, summarize, write_output)

# Labels, colours, order and the headline method come from the method declarations
# (toolbox/methods.py, one in each trainer file); a trainer without one (a ported
# upstream trainer) gets "<trainer> (<variant>)" in grey.
MARKERS = "osD^vPXh<>p*"


def declaration(trainer):
    """The method declaration of ``trainer``, or None."""
    from toolbox.methods import load_methods, method_of_trainer

    load_methods()
    return method_of_trainer(trainer)


def method_label(trainer, variant):
    m = declaration(trainer)
    return m.table_label(variant) if m else f"{trainer} ({variant})"


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


def chance_level(runs):
    """Mean over tasks of 1 / number of classes (%), from a run's per-class results."""
    for r in runs:
        per_class = r.data.get("per_class") or {}
        counts = [len(per_class[t]) for t in r.task_values() if per_class.get(t)]
        if counts and len(counts) == len(r.task_values()):
            return 100.0 * sum(1.0 / n for n in counts) / len(counts)
    return None


class Methods(OrderedDict):
    """{label: Method}; ``chance``: the dataset's chance level (%), None if unknown."""
    chance = None


class Method(OrderedDict):
    """{shots: Summary} of one method, with its trainer, variant and short label."""

    def __init__(self, trainer, variant, label):
        super().__init__()
        self.trainer, self.variant, self.label = trainer, variant, label

    @property
    def seeds(self):
        return sorted({s.overall["n"] for s in self.values()})


def short_labels(found):
    """Labels for (trainer, variant, config) keys: the short label; where variants of
    one method share it (e.g. two context settings of one method), its declaration's detail of
    each variant; where one method ran under several configs, the config too."""
    variants, configs = {}, {}
    for (t, v, config), m in found.items():
        variants.setdefault(m.label, set()).add((t, v))
        configs.setdefault(m.label, set()).add(config)
    labels = {}
    for key, m in found.items():
        name = m.label
        decl = declaration(m.trainer)
        if len(variants[m.label]) > 1 and decl is not None:
            name = f"{name} ({decl.label_detail(m.variant)})"
        if len(configs[m.label]) > 1:  # e.g. ep50 and ep200 of one method
            name = f"{name} [{key[2]}]"
        labels[key] = name
    return labels


def collect(root, dataset, backbone=None, ddof=0):
    """{method: Method} for the dataset's experiments on ``backbone``."""
    folder = osp.join(root, dataset)
    if not osp.isdir(folder):
        raise UserError(f"no results for dataset '{dataset}' under {root} ({folder} does not "
                        "exist); run scripts/compare_all.sh first")
    found = OrderedDict()
    chance = None
    for exp, runs in group_runs(find_runs(folder)).items():
        info = describe(osp.join(dataset, exp))
        if info["trainer"] is None or not uses_backbone(info["config"], backbone):
            continue
        key = (info["trainer"], info["variant"], info["config"])
        if key not in found:
            found[key] = Method(info["trainer"], info["variant"],
                                method_label(info["trainer"], info["variant"]))
        summary = summarize(exp, runs, ddof)
        shots = info["shots"] if summary.shots is None else summary.shots
        found[key][shots] = summary
        chance = chance if chance is not None else chance_level(runs)
    labels = short_labels(found)
    methods = Methods()
    for key in sorted(found, key=lambda k: labels[k]):
        methods[labels[key]] = found[key]
        found[key].label = labels[key]
    if not methods:
        raise UserError(f"no runs of backbone '{backbone}' under {folder}; check --backbone "
                        "(a backbone name: rn50, vit_b16, tiny_vit, open_clip:ViT-B-32, ...)")
    methods.chance = chance
    return methods


def missing_shots(methods, shots_list):
    """Requested shot counts no trained method has runs for."""
    return [s for s in shots_list if not any(s in b for b in methods.values() if set(b) != {0})]


def at_shots(by_shots, shots):
    """The summary for ``shots``; a zero-shot method's summary for any shots."""
    if shots in by_shots:
        return by_shots[shots]
    if set(by_shots) == {0}:
        return by_shots[0]
    return None


def tables(methods, shots_list):
    """{shots: (headers, rows)}: rows = tasks then overall, columns = methods. A
    requested shot count without runs of a trained method gets (None, message)."""
    out = OrderedDict()
    absent = missing_shots(methods, shots_list)
    for shots in shots_list:
        if shots in absent:
            out[shots] = (None, no_runs_message(shots))
            continue
        present = [(m, at_shots(b, shots)) for m, b in methods.items()]
        present = [(m, s) for m, s in present if s is not None]
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


def no_runs_message(shots):
    return (f"warning: no runs at {shots} shots (requested with --shots); run them, or leave "
            f"{shots} out")


def render(all_tables, tablefmt="github"):
    parts = []
    for shots, (headers, rows) in all_tables.items():
        body = rows if headers is None else tabulate(rows, headers=headers, tablefmt=tablefmt,
                                                     disable_numparse=True)
        parts.append(f"## {shots_label(shots)} shots\n{body}")
    return "\n\n".join(parts)


def to_csv(all_tables):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["shots", "task", "method", "mean ± std"])
    for shots, (headers, rows) in all_tables.items():
        if headers is None:
            writer.writerow([shots_label(shots), "", "", "no runs"])
            continue
        for row in rows:
            for method, cell in zip(headers[1:], row[1:]):
                writer.writerow([shots_label(shots), row[0], method, cell])
    return buf.getvalue()


def seeds_text(methods):
    """'3 seeds' when every point averages the same number of seeds, else None."""
    counts = {n for m in methods.values() for n in m.seeds}
    if len(counts) == 1:
        n = counts.pop()
        return f"{n} seed{'s' * (n != 1)}"
    return None


def plot(methods, shots_list, path, title=""):
    """Overall accuracy (mean ± std over seeds) against shots, one line per method:
    a colour per method family, a marker per variant, the headline method boldest,
    zero-shot and chance as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from toolbox.methods import OKABE_ITO

    shots_list = [s for s in shots_list if s > 0]  # 'all' (every image) has no place on a log axis
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    decls = {name: declaration(m.trainer) for name, m in methods.items()}

    def is_headline(name):
        d = decls[name]
        return d is not None and d.headline and name == d.table_label(d.default_variant)

    order = sorted(methods.items(), key=lambda kv: (
        decls[kv[0]].order if decls[kv[0]] else 1000, not is_headline(kv[0]), kv[0]))
    variant_index = {}
    headline = next((n for n, _ in order if is_headline(n)), None) or next(
        (n for n, _ in order if decls[n] is not None and decls[n].headline), None)
    same_seeds = seeds_text(methods)
    handles = []
    for name, m in order:
        decl = decls[name]
        colour = OKABE_ITO[decl.colour if decl else "grey"]
        family = decl.family_name if decl else m.trainer
        i = variant_index[family] = variant_index.get(family, -1) + 1
        n = "-".join(map(str, m.seeds))
        label = name if same_seeds else f"{name} ({n} seed{'s' * (n != '1')})"
        if set(m) == {0}:
            handles.append(ax.axhline(m[0].overall["mean"], linestyle="-.", color=colour,
                                      linewidth=1.4, label=label))
            continue
        xs = [s for s in shots_list if s in m]
        if not xs:
            continue
        bold = name == headline
        handles.append(ax.errorbar(xs, [m[s].overall["mean"] for s in xs],
                    yerr=[m[s].overall["std"] for s in xs], marker=MARKERS[i % len(MARKERS)],
                    color=colour, capsize=3, linewidth=3.0 if bold else 1.4,
                    markersize=8 if bold else 5.5, zorder=10 if bold else 3,
                    alpha=1.0 if bold else 0.85, label=label))
    if methods.chance is not None:
        handles.append(ax.axhline(methods.chance, linestyle="--", color=OKABE_ITO["grey"],
                                  linewidth=1.2, label=f"chance ({methods.chance:.1f}%)"))
    absent = missing_shots(methods, shots_list)
    ax.set_xscale("log", base=2)
    ax.set_xticks(shots_list)
    ax.set_xticklabels([str(s) + (" (no runs)" if s in absent else "") for s in shots_list])
    ax.set_xlabel("shots per class")
    ax.set_ylabel("overall accuracy (%)")
    ax.set_title(title + (f": mean ± std over {same_seeds}" if same_seeds
                          else ": mean ± std over seeds"))
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))  # beside the axes, in family order
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), mode="wb")
    plt.close(fig)


def shots_arg(text):
    """--shots value: a count, or 'all' (ALL_IMAGES)."""
    if text == "all":
        return ALL_IMAGES
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shot count or 'all', got '{text}'") from None


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help="dataset config name, e.g. demo, fewshot44")
    p.add_argument("--shots", type=shots_arg, nargs="+", required=True,
                   help="e.g. 1 2 4 8 16; 'all': runs trained on every training image")
    p.add_argument("--backbone", default=None, help="backbone name or alias (rn50, vit_b16, "
                   "tiny_vit, open_clip:ViT-B-32[@<tag>], ...); default: all")
    p.add_argument("--root", default="output", help="the scripts' output folder")
    p.add_argument("--plot", help="write the accuracy-vs-shots plot to this PNG file")
    p.add_argument("--csv", help="also write the tables as CSV to this file")
    p.add_argument("--format", default="github", help="tabulate table format")
    p.add_argument("--reference", help="also print published figures beside ours "
                   "(tools/reference.py: a file of tools/reference_data/ without .yaml)")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        if any(s < 1 and s != ALL_IMAGES for s in args.shots):
            raise UserError("--shots must be positive counts or 'all' (zero-shot results join "
                            "every column)")
        args.backbone = canonical_backbone(args.backbone)
        methods = collect(args.root, args.dataset, args.backbone)
        all_tables = tables(methods, args.shots)
        for shots in missing_shots(methods, args.shots):
            print(no_runs_message(shots), file=sys.stderr)
        if all(headers is None for headers, _ in all_tables.values()):
            raise UserError(f"no results for shots {args.shots} of {args.dataset}; found "
                            f"{sorted({s for b in methods.values() for s in b})}")
        print(render(all_tables, args.format))
        if args.reference:  # tools/reference.py: the paper's figures beside ours
            from tools.reference import render as reference_table
            print("\n" + reference_table(args.root, args.reference, [args.dataset],
                                          args.backbone, args.shots, args.format))
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
