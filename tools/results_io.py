"""Finding, grouping and summarising results.json files (shared by
parse_results.py, compare.py, protocols.py and the grid's tables).

The layout and the results.json reader belong to toolbox/run_folder.py:
    <root>/<dataset>/<Trainer>/<config>_<shots>shots/<variant>/seed<S>/results.json
A run folder is one seed; an experiment is the run folder's parent (all
seeds of one setting). Figures are never parsed from logs.
"""
import glob
import math
import os.path as osp
from collections import OrderedDict
from dataclasses import dataclass

from toolbox.errors import UserError
from toolbox.run_folder import (ALL_IMAGES, SEED_DIR, SETTING_DIR, describe,  # noqa: F401
                                read_results, results_shape_problem)


@dataclass
class Run:
    path: str  # the results.json file
    experiment: str  # run folder's parent, relative to the root searched
    seed: int
    data: dict

    @property
    def overall(self):
        return float(self.data["overall"])

    @property
    def shots(self):
        """results.json's shots (ALL_IMAGES: every training image), None if unrecorded."""
        shots = self.data.get("shots")
        return shots if isinstance(shots, int) and not isinstance(shots, bool) else None

    def task_values(self):
        """OrderedDict task -> (metric, value) in the dataset's task order."""
        return OrderedDict((t["task"], (t["metric"], float(t["value"])))
                           for t in self.data.get("tasks", []))


def write_output(path, write, what="output"):
    """Run ``write()`` (which writes ``path``); an OSError is a UserError
    naming the path."""
    try:
        write()
    except OSError as e:
        raise UserError(f"cannot write {what} {path} ({e.strerror or type(e).__name__}); choose "
                        "a writable path") from None


def find_runs(root):
    """Every run under ``root`` (sorted by experiment, then seed)."""
    if not osp.isdir(root):
        raise UserError(f"results folder {root} does not exist; run a script under scripts/ "
                        "first or point at its output folder")
    runs = []
    for path in glob.glob(osp.join(root, "**", "results.json"), recursive=True):
        run_dir = osp.dirname(path)
        data = read_results(path)
        match = SEED_DIR.match(osp.basename(run_dir))
        if match:
            seed, exp_dir = int(match.group(1)), osp.dirname(run_dir)
        else:  # a run folder not named seed<S>: its own experiment
            seed, exp_dir = int(data.get("seed", 0)), run_dir
        rel = osp.relpath(exp_dir, root)
        runs.append(Run(path, "." if rel == "." else rel, seed, data))
    return sorted(runs, key=lambda r: (r.experiment, r.seed))


def group_runs(runs):
    """OrderedDict experiment -> list of runs (one per seed)."""
    groups = OrderedDict()
    for r in runs:
        groups.setdefault(r.experiment, []).append(r)
    return groups


def shots_label(shots):
    """How a shot count reads in tables: '16', or 'all' for every training image."""
    return "all" if shots == ALL_IMAGES else str(shots)


def experiment_shots(runs, folder_shots=None):
    """The shots of an experiment's runs: what their results.json files record
    (a run trained on every image says ALL_IMAGES even in a '_0shots' folder,
    where a zero-shot run says 0), else the folder name's."""
    recorded = {r.shots for r in runs if r.shots is not None}
    if len(recorded) > 1:
        raise UserError(f"the runs of {runs[0].experiment} record different shots "
                        f"({sorted(recorded)}); one experiment folder is one setting: move "
                        "them apart")
    return recorded.pop() if recorded else folder_shots


def mean_std(values, ddof=0):
    """Mean and standard deviation (ddof 0, the population std, as Dassl-based prompt-tuning papers report)."""
    values = list(values)
    n = len(values)
    m = sum(values) / n
    if n - ddof <= 0:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (n - ddof))


@dataclass
class Summary:
    experiment: str
    seeds: list
    tasks: OrderedDict  # task -> dict(metric, mean, std, n)
    overall: dict  # mean, std, n: over the seeds' overall figures
    shots: int = None  # as the runs record it (ALL_IMAGES: every training image)

    def rows(self):
        """(task, metric, mean, std, n) rows, the overall figure last."""
        out = [(t, s["metric"], s["mean"], s["std"], s["n"]) for t, s in self.tasks.items()]
        out.append(("overall", "mean over tasks", self.overall["mean"], self.overall["std"],
                    self.overall["n"]))
        return out


def summarize(experiment, runs, ddof=0):
    """Mean and std over seeds of each task's metric and of the overall figure."""
    tasks = OrderedDict()
    for r in runs:
        for task, (metric, value) in r.task_values().items():
            tasks.setdefault(task, {"metric": metric, "values": []})["values"].append(value)
    for task, entry in tasks.items():
        m, s = mean_std(entry.pop("values"), ddof)
        entry.update(mean=m, std=s, n=len([r for r in runs if task in r.task_values()]))
    m, s = mean_std([r.overall for r in runs], ddof)
    return Summary(experiment, [r.seed for r in runs], tasks, dict(mean=m, std=s, n=len(runs)),
                   experiment_shots(runs))


def summarize_all(root, ddof=0):
    """Summary per experiment under ``root``."""
    runs = find_runs(root)
    if not runs:
        raise UserError(f"no results.json under {root}; runs write one when they finish "
                        "testing")
    return [summarize(exp, rs, ddof) for exp, rs in group_runs(runs).items()]


def fmt_mean_std(mean, std, n):
    return f"{mean:.2f}" if n < 2 else f"{mean:.2f} ± {std:.2f}"
