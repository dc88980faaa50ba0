"""Published numbers beside ours.

    python tools/reference.py [NAME] [--root output] [--dataset rs8 ...] [--backbone rn50]
    python tools/compare.py --dataset general10 --shots 1 2 4 8 16 --reference NAME
    python tools/protocols.py base2new --reference base2new

NAME is a file of tools/reference_data/ without .yaml (default: the one few-shot table
there).

For each suite, method and shot count: our mean ± std over seeds, the paper's
figure, the difference (ours - paper), and a flag (!) where the difference
exceeds two of our standard deviations (1 point with one seed, or for an
average over shot counts). The figures live in tools/reference_data/<name>.yaml
with their sources and caveats (RS-8's class count, a baseline of the paper that is
not ours although it has the same name), and
the caveats are printed with the rows they concern. A dataset the reference does
not cover (e.g. the demo) is printed with our figures only.
"""
import argparse
import os.path as osp
import re
import sys
from collections import OrderedDict

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tabulate import tabulate  # noqa: E402

from toolbox.errors import UserError, one_line  # noqa: E402
from tools.results_io import describe, find_runs, group_runs, summarize  # noqa: E402

DATA = osp.join(ROOT, "tools", "reference_data")
SHOT_COUNTS = (1, 2, 4, 8, 16)


def available():
    import glob

    return sorted(osp.splitext(osp.basename(p))[0] for p in glob.glob(osp.join(DATA, "*.yaml")))


def load_reference(name=None):
    """The reference data file ``name`` (tools/reference_data/<name>.yaml) as a dict;
    None: the one few-shot table (a file with ``suites``)."""
    import yaml

    if name is None:
        tables = [n for n in available() if "suites" in load_reference(n)]
        if len(tables) != 1:
            raise UserError(f"name a reference: one of {', '.join(tables or available())}")
        name = tables[0]
    path = osp.join(DATA, f"{name}.yaml")
    if not osp.isfile(path):
        raise UserError(f"no reference '{name}'; choose from {', '.join(available())}")
    with open(path) as f:
        return yaml.safe_load(f)


def paper_label(ref, trainer, variant):
    """The reference's row name for our (trainer, variant folder), or None."""
    for label, m in ref.get("methods", {}).items():
        if m["trainer"] == trainer and re.fullmatch(str(m["variant"]), variant or ""):
            return label
    return None


def flag(diff, std, n):
    """'!' where |ours - paper| exceeds 2 of our standard deviations (1 point with
    one seed)."""
    if diff is None:
        return ""
    limit = 2.0 * std if n >= 2 else 1.0
    return "!" if abs(diff) > limit else ""


def fmt(x, digits=2, signed=False):
    if x is None:
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def our_results(root, datasets=None, backbone=None):
    """{(dataset, backbone): {(trainer, variant, config): {shots: Summary}}} under ``root``."""
    found = OrderedDict()
    for experiment, runs in group_runs(find_runs(root)).items():
        info = describe(experiment)
        if info["trainer"] is None:
            continue
        if datasets and info["dataset"] not in datasets:
            continue
        bb = runs[0].data.get("backbone") or info["config"].split("_")[0]
        if backbone and bb != backbone:
            continue
        key = (info["trainer"], info["variant"], info["config"])
        found.setdefault((info["dataset"], bb), OrderedDict()).setdefault(key, {})[
            info["shots"]] = summarize(experiment, runs)
    return found


def method_rows(ref, suite, trainer, variant, by_shots, label):
    """Table rows of one of our methods (per shot count, and the average)."""
    paper = (suite or {}).get("results", {}).get(label, {}) if label else {}
    rows = []
    zero_shot = set(by_shots) == {0}
    for shots in sorted(by_shots):
        s = by_shots[shots].overall
        theirs = paper.get("avg") if zero_shot else paper.get(shots)
        diff = None if theirs is None else s["mean"] - theirs
        ours = fmt(s["mean"]) + (f" ± {s['std']:.2f}" if s["n"] >= 2 else "")
        rows.append([label or f"{trainer} ({variant})", "zero-shot" if zero_shot else shots,
                     ours, s["n"], fmt(theirs), fmt(diff, signed=True),
                     flag(diff, s["std"], s["n"])])
    if not zero_shot and all(k in by_shots for k in SHOT_COUNTS):
        mean = sum(by_shots[k].overall["mean"] for k in SHOT_COUNTS) / len(SHOT_COUNTS)
        theirs = paper.get("avg")
        diff = None if theirs is None else mean - theirs
        rows.append([label or f"{trainer} ({variant})", "avg", fmt(mean), "",
                     fmt(theirs), fmt(diff, signed=True), flag(diff, 0.0, 1)])
    return rows


def render(root, name=None, datasets=None, backbone=None, shots=None, tablefmt="github"):
    """The comparison tables as text."""
    ref = load_reference(name)
    found = our_results(root, datasets, backbone)
    if not found:
        what = f" of {', '.join(datasets)}" if datasets else ""
        raise UserError(f"no results{what} under {root}" +
                        (f" on backbone {backbone}" if backbone else "") +
                        "; run the scripts first or point --root at their output folder")
    out = []
    for (dataset, bb), methods in found.items():
        suite = ref["suites"].get(dataset)
        rows, caveats = [], []
        for (trainer, variant, config), by_shots in methods.items():
            if shots:
                by_shots = {k: v for k, v in by_shots.items() if k in shots or k == 0}
            if not by_shots:
                continue
            label = paper_label(ref, trainer, variant)
            rows += method_rows(ref, suite, trainer, variant, by_shots, label)
            note = ref.get("method_caveats", {}).get(label)
            if note and suite and (label, note) not in caveats:
                caveats.append((label, note))
        if not rows:
            continue
        title = suite["label"] if suite else dataset
        head = (f"## {title} ({dataset}): ours on {bb}, seeds' mean ± std, vs {ref['title']}")
        lines = [head]
        if not suite:
            lines.append(f"Note: {ref['title']} has no figures for {dataset} (it covers "
                         f"{', '.join(s['label'] for s in ref['suites'].values())}).")
        elif bb != ref.get("backbone"):
            lines.append(f"Note: the paper's backbone is {ref['backbone']}, ours here {bb}: "
                         "the differences are not like-for-like.")
        if suite and dataset in ref.get("suite_caveats", {}):
            lines.append(f"Caveat ({title}): {ref['suite_caveats'][dataset]}")
        lines.append(tabulate(rows, headers=["method", "shots", "ours", "seeds", "paper",
                                             "ours - paper", "flag"],
                              tablefmt=tablefmt, disable_numparse=True))
        lines += [f"Caveat ({label}): {note}" for label, note in caveats]
        out.append("\n".join(lines))
    out.append(f"Flag !: |ours - paper| above 2 of our standard deviations (1 point with one "
               f"seed or for an average). Source: {ref['source']}.")
    return "\n\n".join(out)


# ---- base-to-new peers (tools/protocols.py --reference) ------------------------------------

def base2new_reference(our_tables, name="base2new", tablefmt="github"):
    """The published peers' base / new / HM, with our average beside the peer of the
    same method. ``our_tables``: tools/protocols.py base2new_rows()."""
    ref = load_reference(name)
    ours = {}
    for method, rows in our_tables.items():
        trainer, _, rest = method.partition(osp.sep)
        variant = rest.rsplit(osp.sep, 1)[-1]
        label = paper_label(ref, trainer, variant)
        if label and rows and rows[-1][0] == "Average":
            ours.setdefault(label, []).append((method, rows[-1], len(rows) - 1))
    body = []
    for label, r in ref["results"].items():
        body.append([label, "published", fmt(r["base"]), fmt(r["new"]), fmt(r["hm"]), "",
                     r["source"]])
        for method, (_, b, n, h, _), count in ours.get(label, []):
            body.append(["", f"ours ({count} datasets)", fmt(b), fmt(n), fmt(h),
                         fmt(h - r["hm"], signed=True), method])
    text = (f"## {ref['title']}\n" + tabulate(
        body, headers=["method", "", "base", "new", "HM", "HM: ours - published", "source / run"],
        tablefmt=tablefmt, disable_numparse=True))
    notes = [f"Note: {n}" for n in ref.get("notes", [])]
    notes.append(f"Note: the published figures are {ref['backbone']}, {ref['shots']} shots, "
                 f"{ref['seeds']} seeds, averaged over 11 datasets; ours average the datasets "
                 "found.")
    return text + "\n" + "\n".join(notes)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("reference", nargs="?", default=None, help="a file of "
                   "tools/reference_data/ without .yaml (default: the one few-shot table)")
    p.add_argument("--root", default="output", help="the scripts' output folder")
    p.add_argument("--dataset", nargs="+", help="dataset config names (default: all found)")
    p.add_argument("--backbone", help="only runs on this backbone (canonical name or alias)")
    p.add_argument("--shots", type=int, nargs="+", help="only these shot counts")
    p.add_argument("--format", default="github", help="tabulate table format")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        backbone = args.backbone
        if backbone:
            from trainers.backbones import canonical_name
            backbone = canonical_name(backbone)
        print(render(args.root, args.reference, args.dataset, backbone, args.shots,
                     args.format))
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
