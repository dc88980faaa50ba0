"""The generalisation protocols: harmonic mean and tables from results.json
trees, and every protocol script run end to end on the demo."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from toolbox.utils import write_json
from tools.protocols import base2new_rows, harmonic_mean, render, transfer_rows


def test_harmonic_mean():
    # published averages (CoOp and CoCoOp over 11 datasets): base, new -> HM
    assert harmonic_mean(82.69, 63.22) == pytest.approx(71.66, abs=0.01)
    assert harmonic_mean(80.47, 71.69) == pytest.approx(75.83, abs=0.01)
    assert harmonic_mean(60.0, 60.0) == 60.0
    assert harmonic_mean(90.0, 0.0) == 0.0 and harmonic_mean(0.0, 0.0) == 0.0


def table_row(text, first):
    """Cells of the table row whose first cell is ``first``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in\n{text}")


def put(root, rel, overall):
    write_json({"overall": overall, "tasks": []}, osp.join(str(root), rel, "results.json"))


def test_base2new_table_from_a_results_tree(tmp_path):
    m = "shots_16/DualViewMI/vit_b16_ep10_batch4"
    for seed, (b, n) in {1: (80.0, 70.0), 2: (82.0, 74.0)}.items():
        put(tmp_path, f"base2new/train_base/eurosat/{m}/seed{seed}", b)
        put(tmp_path, f"base2new/test_new/eurosat/{m}/seed{seed}", n)
    put(tmp_path, f"base2new/train_base/dtd/{m}/seed1", 60.0)
    put(tmp_path, f"base2new/test_new/dtd/{m}/seed1", 40.0)
    put(tmp_path, f"base2new/train_base/dtd/{m}/seed3", 99.0)  # no new-class run: left out
    put(tmp_path, f"base2new/train_base/food101/{m}/seed1", 99.0)  # idem, whole dataset
    rows = base2new_rows(str(tmp_path))[m]
    assert [r[0] for r in rows] == ["dtd", "eurosat", "Average"]
    assert rows[0][1:4] == pytest.approx((60.0, 40.0, 48.0))
    assert rows[1][1:4] == pytest.approx((81.0, 72.0, 2 * 81 * 72 / 153))
    assert rows[0][4] == [1] and rows[1][4] == [1, 2]
    # the average row: mean base, mean new, HM of those means
    assert rows[2][1:4] == pytest.approx((70.5, 56.0, 2 * 70.5 * 56 / 126.5))
    assert table_row(render("base2new", str(tmp_path)), "dtd") == ["dtd", "60.00", "40.00",
                                                                    "48.00", "1"]
    assert table_row(render("base2new", str(tmp_path)), "Average") == ["Average", "70.50", "56.00",
                                                                        "62.42", ""]


def test_transfer_tables_from_a_results_tree(tmp_path):
    m = "shots_16/KgCoOp/vit_b16_ep10_batch4"
    for seed, acc in ((1, 70.0), (2, 72.0)):
        put(tmp_path, f"xd/train/imagenet/{m}/seed{seed}", acc)
        put(tmp_path, f"xd/test/imagenet/dtd/{m}/seed{seed}", acc - 30)
        put(tmp_path, f"xd/test/imagenet/eurosat/{m}/seed{seed}", acc - 20)
        put(tmp_path, f"dg/test/imagenet/imagenet_a/{m}/seed{seed}", acc - 20)
    put(tmp_path, "xd/test/imagenet/dtd/shots_16/CoOp/other/seed1", 1.0)  # no source model
    xd = transfer_rows(str(tmp_path), "xd")
    assert list(xd) == [("imagenet", m)]
    assert dict(xd[("imagenet", m)]) == pytest.approx(
        {"imagenet": 71.0, "dtd": 41.0, "eurosat": 51.0, "Average": 46.0})
    dg = transfer_rows(str(tmp_path), "dg")
    assert dict(dg[("imagenet", m)]) == pytest.approx(
        {"imagenet": 71.0, "imagenet_a": 51.0, "Average": 51.0})


# ---- the scripts, end to end on the demo ---------------------------------------------------

@pytest.fixture(scope="module")
def protocol_env(demo_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("protocols"))
    env = dict(os.environ, DATA=demo_root, OUT_ROOT=out, PYTHON=sys.executable, SHOTS="2",
               OPTS="OPTIM.MAX_EPOCH 1", OMP_NUM_THREADS="2", XD_SOURCE="demo_parity",
               XD_TARGETS="demo_digit", DG_TARGETS="demo_magnitude")
    return out, env


def script(env, method, name, *args, check=True):
    proc = subprocess.run(["bash", osp.join(ROOT, "scripts", method, name), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{method}/{name} failed:\n{proc.stdout[-2000:]}\n"
                             f"{proc.stderr[-2000:]}")
    return proc


def results(out, rel):
    with open(osp.join(out, rel, "results.json")) as f:
        return json.load(f)


def test_base2new_scripts_train_on_base_and_evaluate_new(protocol_env):
    out, env = protocol_env
    early = script(env, "dualviewmi", "base2new_test.sh", "demo_digit", "1", check=False)
    assert early.returncode == 2 and "run base2new_train.sh demo_digit 1 first" in early.stderr
    script(env, "dualviewmi", "base2new_train.sh", "demo_digit", "1")
    test = script(env, "dualviewmi", "base2new_test.sh", "demo_digit", "1")
    m = "shots_2/DualViewMI/tiny_vit_ep10/seed1"
    base = results(out, f"base2new/train_base/demo_digit/{m}")
    new = results(out, f"base2new/test_new/demo_digit/{m}")
    assert base["subsample_classes"] == "base" and new["subsample_classes"] == "new"
    assert sorted(base["per_class"]["DemoDigit"]) != sorted(new["per_class"]["DemoDigit"])
    model_dir = osp.join(out, "base2new/train_base")
    assert f"Loading weights to prompt_learner from {model_dir}" in test.stdout
    assert new["overall"] > 40.0  # 5 new classes, chance 20%
    again = script(env, "dualviewmi", "base2new_train.sh", "demo_digit", "1")
    assert "Results exist" in again.stdout
    # through parse_results.py's --protocol hook (which calls tools/protocols.py)
    table = subprocess.run([sys.executable, osp.join(ROOT, "tools", "parse_results.py"), out,
                            "--protocol", "base2new"], capture_output=True, text=True,
                           check=True).stdout
    hm = harmonic_mean(base["overall"], new["overall"])
    assert table_row(table, "demo_digit")[1:4] == [f"{base['overall']:.2f}",
                                                   f"{new['overall']:.2f}", f"{hm:.2f}"]


def test_cross_dataset_and_domain_generalisation_scripts(protocol_env):
    out, env = protocol_env
    script(env, "kgcoop", "xd_train.sh", "1")
    script(env, "kgcoop", "xd_test.sh", "all", "1")
    script(env, "kgcoop", "dg_test.sh", "1")
    m = "shots_2/KgCoOp/tiny_vit_ep10/seed1"
    source = results(out, f"xd/train/demo_parity/{m}")
    target = results(out, f"xd/test/demo_parity/demo_digit/{m}")
    shifted = results(out, f"dg/test/demo_parity/demo_magnitude/{m}")
    assert [t["task"] for t in target["tasks"]] == ["DemoDigit"]
    assert [t["task"] for t in shifted["tasks"]] == ["DemoMagnitude"]
    assert source["trainer"] == target["trainer"] == "KgCoOp"
    for protocol, name, acc in (("xd", "demo_digit", target), ("dg", "demo_magnitude", shifted)):
        rows = transfer_rows(out, protocol)[("demo_parity", "shots_2/KgCoOp/tiny_vit_ep10")]
        assert rows[name] == pytest.approx(acc["overall"])
        assert rows["demo_parity"] == pytest.approx(source["overall"])
