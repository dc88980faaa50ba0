"""parse_results.py and compare.py on results.json files written in the
scripts' layout, with known values."""
import csv
import json
import math
import os.path as osp
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from toolbox.utils import write_json
from tools.compare import collect, tables
from tools.results_io import describe, find_runs, group_runs, mean_std, summarize

TASKS = [("DemoDigit", "accuracy"), ("DemoParity", "accuracy"),
         ("DemoMagnitude", "mean_per_class")]
N_CLASSES = [10, 2, 2]


def write_run(root, trainer, setting, variant, seed, values):
    """A results.json as SimpleTrainer.write_results writes it."""
    tasks = [{"task": t, "metric": m, "value": v, "accuracy": v + (1.0 if m != "accuracy" else 0),
              "mean_per_class": v, "total": 100, "correct": int(v)}
             for (t, m), v in zip(TASKS, values)]
    out = {"dataset": "Demo", "trainer": trainer, "backbone": "tiny_vit",
           "shots": int(setting.rsplit("_", 1)[1][:-5]), "seed": seed,
           "overall": sum(values) / len(values), "tasks": tasks,
           "per_class": {t: {f"c{i}": 50.0 for i in range(n)}
                         for (t, _), n in zip(TASKS, N_CLASSES)}}
    write_json(out, osp.join(root, "demo", trainer, setting, variant, f"seed{seed}",
                             "results.json"))


@pytest.fixture
def results_tree(tmp_path):
    root = str(tmp_path / "output")
    write_run(root, "SoftCPT", "tiny_vit_ep10_4shots", "NATA", 1, [80.0, 60.0, 70.0])
    write_run(root, "SoftCPT", "tiny_vit_ep10_4shots", "NATA", 2, [90.0, 70.0, 50.0])
    write_run(root, "SoftCPT", "tiny_vit_ep10_1shots", "NATA", 1, [50.0, 50.0, 50.0])
    write_run(root, "CoOpMT", "tiny_vit_ep10_4shots", "task", 1, [70.0, 55.0, 60.0])
    write_run(root, "CoOpMT", "tiny_vit_ep10_4shots", "task", 3, [72.0, 57.0, 62.0])
    write_run(root, "ZeroshotCLIP", "tiny_vit_0shots", "task", 1, [88.0, 45.0, 35.0])
    write_run(root, "CoOpMT", "rn50_ep50_4shots", "task", 1, [1.0, 2.0, 3.0])  # other backbone
    return root


def test_mean_std_population_and_sample():
    assert mean_std([80.0, 90.0]) == (85.0, 5.0)
    m, s = mean_std([80.0, 90.0], ddof=1)
    assert m == 85.0 and math.isclose(s, math.sqrt(50.0))
    assert mean_std([7.0], ddof=1) == (7.0, 0.0)


def test_runs_grouped_by_experiment_with_seeds(results_tree):
    groups = group_runs(find_runs(results_tree))
    key = osp.join("demo", "SoftCPT", "tiny_vit_ep10_4shots", "NATA")
    assert [r.seed for r in groups[key]] == [1, 2]
    assert describe(key) == dict(dataset="demo", trainer="SoftCPT", config="tiny_vit_ep10",
                                 shots=4, variant="NATA")
    s = summarize(key, groups[key])
    assert s.tasks["DemoDigit"] == dict(metric="accuracy", mean=85.0, std=5.0, n=2)
    assert s.tasks["DemoMagnitude"]["mean"] == 60.0 and s.tasks["DemoMagnitude"]["std"] == 10.0
    # overall: mean over seeds of each seed's mean over tasks (70 and 70)
    assert s.overall == dict(mean=70.0, std=0.0, n=2)


def run_tool(*argv):
    return subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_parse_results_cli_table_csv_json(results_tree, tmp_path):
    csv_path, json_path = tmp_path / "t.csv", tmp_path / "t.json"
    proc = run_tool("tools/parse_results.py", osp.join(results_tree, "demo"),
                    "--csv", csv_path, "--json", json_path)
    assert proc.returncode == 0, proc.stderr
    assert "85.00 ± 5.00" in proc.stdout  # SoftCPT 4 shots, DemoDigit
    assert "(seeds 1, 3)" in proc.stdout  # CoOpMT's seeds
    rows = list(csv.DictReader(open(csv_path)))
    row = [r for r in rows if r["experiment"] == osp.join("CoOpMT", "tiny_vit_ep10_4shots", "task")
           and r["task"] == "DemoParity"][0]
    assert (float(row["mean"]), float(row["std"]), int(row["seeds"])) == (56.0, 1.0, 2)
    data = json.load(open(json_path))
    soft = [d for d in data if d["experiment"].startswith("SoftCPT/tiny_vit_ep10_4shots")][0]
    assert soft["seeds"] == [1, 2]
    assert soft["overall"]["mean"] == 70.0
    assert [t["task"] for t in soft["tasks"]] == [t for t, _ in TASKS]


def test_parse_results_missing_folder_is_one_line_error(tmp_path):
    proc = run_tool("tools/parse_results.py", tmp_path / "nothing")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: results folder") and proc.stderr.count("\n") == 1


def test_compare_tables_and_plot(results_tree, tmp_path):
    methods = collect(results_tree, "demo", "tiny_vit")
    assert set(methods) == {"SoftCPT-NATA", "CoOp-CA", "ZS-CLIP"}  # rn50 run left out
    out = tables(methods, [1, 4])
    headers, rows = out[4]
    assert headers == ["task", "CoOp-CA", "SoftCPT-NATA", "ZS-CLIP"]
    by_task = {r[0]: r[1:] for r in rows}
    assert by_task["DemoDigit"] == ["71.00 ± 1.00", "85.00 ± 5.00", "88.00"]
    assert by_task["overall"][1] == "70.00 ± 0.00"
    headers1, rows1 = out[1]
    assert headers1 == ["task", "SoftCPT-NATA", "ZS-CLIP"]  # zero-shot joins every column

    png = tmp_path / "plot.png"
    proc = run_tool("tools/compare.py", "--root", results_tree, "--dataset", "demo",
                    "--shots", "1", "4", "--backbone", "tiny_vit", "--plot", png)
    assert proc.returncode == 0, proc.stderr
    assert "## 4 shots" in proc.stdout and "SoftCPT-NATA" in proc.stdout
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_compare_labels_chance_seeds_and_missing_shots(results_tree, tmp_path):
    write_run(results_tree, "CoOp", "tiny_vit_ep10_4shots", "nctx5_cscFalse_ctpend", 1,
              [70.0, 60.0, 50.0])
    methods = collect(results_tree, "demo", "tiny_vit")
    assert "CoOp" in methods  # not CoOp/nctx5_cscFalse_ctpend
    assert methods.chance == pytest.approx(100 * (1 / 10 + 1 / 2 + 1 / 2) / 3)
    assert methods["SoftCPT-NATA"].seeds == [1, 2]
    write_run(results_tree, "CoOp", "tiny_vit_ep10_4shots", "nctx16_cscTrue_ctpfront", 1,
              [70.0, 60.0, 50.0])
    labels = set(collect(results_tree, "demo", "tiny_vit"))
    assert {"CoOp (5 ctx)", "CoOp (16 ctx, CSC, front)"} <= labels

    png = tmp_path / "plot.png"
    proc = run_tool("tools/compare.py", "--root", results_tree, "--dataset", "demo",
                    "--shots", "1", "2", "4", "--backbone", "tiny_vit", "--plot", png)
    assert proc.returncode == 0, proc.stderr
    # a requested shot count without runs: a warning on stderr and in the table
    assert "warning: no runs at 2 shots" in proc.stderr
    assert "## 2 shots\nwarning: no runs at 2 shots" in proc.stdout
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_style_families_markers_headline_chance(results_tree, tmp_path, monkeypatch):
    """What the plot draws, read back from matplotlib's artists."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tools import compare

    write_run(results_tree, "SoftCPT", "tiny_vit_ep10_4shots", "CATA", 1, [80.0, 60.0, 70.0])
    write_run(results_tree, "CoOpMT", "tiny_vit_ep10_4shots", "shared", 1, [70.0, 50.0, 60.0])
    methods = collect(results_tree, "demo", "tiny_vit")
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)  # keep the figure to inspect it
    compare.plot(methods, [1, 4], str(tmp_path / "p.png"), "demo (tiny_vit)")
    ax = figs[0].axes[0]
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar: its data line
    assert "seeds" in ax.get_title()  # 1-2 seeds: per method in the legend instead
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["SoftCPT-NATA (1-2 seeds)", "SoftCPT-CATA (1 seed)"]  # headline first
    assert legend[-1].startswith("chance (")
    soft, cata = lines["SoftCPT-NATA (1-2 seeds)"], lines["SoftCPT-CATA (1 seed)"]
    ca, mt = lines["CoOp-CA (2 seeds)"], lines["CoOp-MT (1 seed)"]
    assert soft.get_color() == cata.get_color() != ca.get_color() == mt.get_color()
    assert soft.get_marker() != cata.get_marker() and ca.get_marker() != mt.get_marker()
    assert soft.get_linewidth() > max(ln.get_linewidth() for ln in (cata, ca, mt))
    chance = [ln for ln in ax.get_lines() if ln.get_label().startswith("chance")]
    assert len(chance) == 1 and chance[0].get_linestyle() == "--"
    assert chance[0].get_ydata()[0] == pytest.approx(methods.chance)
    from toolbox.methods import OKABE_ITO

    palette = {c.lower() for c in OKABE_ITO.values()}
    assert all(matplotlib.colors.to_hex(ln.get_color()) in palette for ln in lines.values())


def test_compare_unknown_dataset_is_one_line_error(results_tree):
    proc = run_tool("tools/compare.py", "--root", results_tree, "--dataset", "nope",
                    "--shots", "4")
    assert proc.returncode == 2 and proc.stderr.startswith("error: no results for dataset")


def test_parse_results_protocol_option_uses_protocol_tables(results_tree):
    proc = run_tool("tools/parse_results.py", results_tree, "--protocol", "base2new")
    assert proc.returncode == 2  # no base-to-new runs in this tree: the protocol module says so
    assert proc.stderr.startswith("error: no base2new results under")
