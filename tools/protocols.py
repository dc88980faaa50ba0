"""Tables of the generalisation protocols from results.json files.

    python tools/protocols.py base2new [--root output]   # base, new, HM per dataset + average
    python tools/protocols.py xd [--root output]         # source and each target dataset
    python tools/protocols.py dg [--root output]         # source and each shifted domain
    python tools/protocols.py base2new --reference base2new  # and the published peers

Reads the layout written by scripts/protocols.sh. Figures are means over the
seeds found; the harmonic mean of an average row is taken of the averaged
base and new accuracies (as the base-to-new papers report it).
"""
import argparse
import os.path as osp
import sys
from collections import OrderedDict, defaultdict

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tabulate import tabulate  # noqa: E402
from toolbox.errors import UserError, check_choice, one_line  # noqa: E402
from tools.results_io import find_runs  # noqa: E402

PROTOCOLS = ("base2new", "xd", "dg")


def harmonic_mean(base, new):
    """HM = 2BN / (B + N); 0 when both are 0."""
    return 0.0 if base + new == 0 else 2.0 * base * new / (base + new)


def mean(values):
    values = list(values)
    return sum(values) / len(values) if values else None


def read_runs(folder):
    """{experiment (run folder without the seed part): {seed: overall}} for
    every run under ``folder`` (none if the folder does not exist)."""
    runs = defaultdict(dict)
    if osp.isdir(folder):
        for run in find_runs(folder):
            runs[run.experiment][run.seed] = run.overall
    return runs


def split_first(rel):
    head, _, rest = rel.partition(osp.sep)
    return head, rest


def base2new_rows(root):
    """{method: [row per dataset..., average row]}; a row is
    (dataset, base, new, hm, seeds) over the seeds with both base and new."""
    base = read_runs(osp.join(root, "base2new", "train_base"))
    new = read_runs(osp.join(root, "base2new", "test_new"))
    tables = defaultdict(list)
    for rel in sorted(base):
        dataset, method = split_first(rel)
        seeds = sorted(set(base[rel]) & set(new.get(rel, {})))
        if not seeds:
            continue
        b = mean(base[rel][s] for s in seeds)
        n = mean(new[rel][s] for s in seeds)
        tables[method].append((dataset, b, n, harmonic_mean(b, n), seeds))
    for method, rows in tables.items():
        b, n = mean(r[1] for r in rows), mean(r[2] for r in rows)
        rows.append(("Average", b, n, harmonic_mean(b, n), None))
    return OrderedDict(sorted(tables.items()))


def transfer_rows(root, protocol):
    """{(source, method): OrderedDict(column -> mean over seeds)}: the source
    accuracy, each target's, and the average over targets."""
    sources = read_runs(osp.join(root, "xd", "train"))
    targets = read_runs(osp.join(root, protocol, "test"))
    tables = OrderedDict()
    for rel in sorted(sources):
        source, method = split_first(rel)
        row = OrderedDict([(source, mean(sources[rel].values()))])
        for trel in sorted(targets):
            tsource, rest = split_first(trel)
            target, tmethod = split_first(rest)
            if tsource == source and tmethod == method:
                row[target] = mean(targets[trel].values())
        if len(row) > 1:
            row["Average"] = mean(v for k, v in row.items() if k != source)
            tables[(source, method)] = row
    return tables


def fmt(value):
    return "-" if value is None else f"{value:.2f}"


def render(protocol, root, tablefmt="github", reference=None):
    """The protocol's tables as text (with ``reference``: the published base-to-new
    peers beside ours, tools/reference.py)."""
    check_choice("protocol", protocol, PROTOCOLS)
    out = []
    if protocol == "base2new":
        for method, rows in base2new_rows(root).items():
            body = [(d, fmt(b), fmt(n), fmt(h), "" if s is None else len(s))
                    for d, b, n, h, s in rows]
            out.append(f"## base-to-new: {method}\n" + tabulate(
                body, headers=["dataset", "base", "new", "HM", "seeds"], tablefmt=tablefmt,
                disable_numparse=True))
    else:
        title = "cross-dataset" if protocol == "xd" else "domain generalisation"
        for (source, method), row in transfer_rows(root, protocol).items():
            out.append(f"## {title}: {method} (source {source})\n" + tabulate(
                [[fmt(v) for v in row.values()]], headers=list(row), tablefmt=tablefmt,
                disable_numparse=True))
    if not out:
        raise UserError(f"no {protocol} results under {root}; run the protocol scripts "
                        f"(scripts/<method>/{'base2new' if protocol == 'base2new' else 'xd'}"
                        "_train.sh ...) first or point --root at their output folder")
    if reference:
        if protocol != "base2new":
            raise UserError(f"--reference covers base2new only (no published {protocol} "
                            "table is stored)")
        from tools.reference import base2new_reference
        out.append(base2new_reference(base2new_rows(root), reference, tablefmt))
    return "\n\n".join(out)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("protocol", choices=PROTOCOLS)
    p.add_argument("--root", default="output", help="OUT_ROOT of the protocol scripts")
    p.add_argument("--format", default="github", help="tabulate table format")
    p.add_argument("--reference", help="print published figures beside ours (a file of "
                   "tools/reference_data/, e.g. base2new)")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        print(render(args.protocol, args.root, args.format, args.reference))
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
