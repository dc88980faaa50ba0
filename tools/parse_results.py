"""Mean ± std over seeds, per task and overall, of every experiment under DIR.

    python tools/parse_results.py output/demo
    python tools/parse_results.py output/demo --csv table.csv --json table.json
    python tools/parse_results.py output --protocol base2new   # tools/protocols.py tables

An experiment is a folder holding seed<S>/results.json runs (the layout of
scripts/common.sh); "overall" is each run's unweighted mean over tasks,
averaged over seeds. std is the population std over seeds (ddof 0, as
the population std, as Dassl-based prompt-tuning papers report); --ddof 1 gives the
sample std.
"""
import argparse
import csv
import io
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tabulate import tabulate  # noqa: E402

from toolbox.errors import UserError, one_line  # noqa: E402
from toolbox.utils import atomic_write, write_json  # noqa: E402
from tools.results_io import ALL_IMAGES, fmt_mean_std, summarize_all, write_output  # noqa: E402

COLUMNS = ["experiment", "task", "metric", "mean", "std", "seeds"]


def long_rows(summaries):
    """One row per (experiment, task) plus each experiment's overall row."""
    return [[s.experiment, task, metric, mean, std, n]
            for s in summaries for task, metric, mean, std, n in s.rows()]


def render(summaries, tablefmt="github"):
    blocks = []
    for s in summaries:
        body = [[task, metric, fmt_mean_std(mean, std, n), n]
                for task, metric, mean, std, n in s.rows()]
        shots = "; all training images" if s.shots == ALL_IMAGES else ""
        blocks.append(f"## {s.experiment} (seeds {', '.join(map(str, s.seeds))}{shots})\n" + tabulate(
            body, headers=["task", "metric", "mean ± std", "seeds"], tablefmt=tablefmt,
            disable_numparse=True))
    return "\n\n".join(blocks)


def to_csv(summaries):
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    for row in long_rows(summaries):
        writer.writerow(row[:3] + [f"{row[3]:.4f}", f"{row[4]:.4f}", row[5]])
    return buf.getvalue()


def to_json(summaries):
    return [{"experiment": s.experiment, "seeds": s.seeds, "shots": s.shots,
             "tasks": [{"task": t, **v} for t, v in s.tasks.items()],
             "overall": s.overall} for s in summaries]


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir", help="folder to search for seed<S>/results.json (e.g. output/demo)")
    p.add_argument("--csv", help="also write the table as CSV (long format) to this file")
    p.add_argument("--json", help="also write the summaries as JSON to this file")
    p.add_argument("--ddof", type=int, default=0, choices=(0, 1),
                   help="0: population std (the papers' convention), 1: sample std")
    p.add_argument("--format", default="github", help="tabulate table format")
    p.add_argument("--protocol", choices=("base2new", "xd", "dg"),
                   help="print a protocol table (tools/protocols.py) for DIR instead")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        if args.protocol:
            from tools import protocols

            print(protocols.render(args.protocol, args.dir, args.format))
            return
        summaries = summarize_all(args.dir, args.ddof)
        print(render(summaries, args.format))
        if args.csv:
            write_output(args.csv, lambda: atomic_write(args.csv, lambda f: f.write(
                to_csv(summaries))), "--csv")
            print(f"CSV written to {args.csv}")
        if args.json:
            write_output(args.json, lambda: write_json(to_json(summaries), args.json), "--json")
            print(f"JSON written to {args.json}")
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
