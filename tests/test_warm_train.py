"""The tests' warm train.py runs (tests/warm_train.py, forked from a server that has
imported train.py's modules) behave as `python train.py` does: the same exit code,
stdout, stderr and results.json, for errors, warnings and a training run."""
import json
import os
import re

import pytest

from tests.conftest import run_train


def _same_streams(warm, fresh, tmp_path):
    def norm(text):
        # the only allowed differences: the two runs' output folders and their timings
        text = text.replace(str(tmp_path / "warm"), "OUT").replace(str(tmp_path / "fresh"), "OUT")
        text = re.sub(r"(time|data) \d+\.\d+ \(\d+\.\d+\)", "T", text)
        return re.sub(r"\d+:\d\d(:\d\d)?|\d+\.\d+s|\d+(\.\d+)? ?(s|it)/(it|s)", "T", text)

    assert warm.returncode == fresh.returncode
    assert norm(warm.stderr) == norm(fresh.stderr)
    assert norm(warm.stdout) == norm(fresh.stdout)


@pytest.mark.parametrize("case", ["unknown_key", "bad_value", "missing_data", "unknown_trainer"])
def test_errors_are_the_same_warm_and_fresh(demo_root, tmp_path, case):
    argv, says = {
        "unknown_key": (["--trainer", "CoOp", "OPTIM.NO_SUCH_KEY", "1"], "NO_SUCH_KEY"),
        "bad_value": (["--trainer", "CoOp", "DATALOADER.TRAIN_X.BATCH_SIZE", "0"],
                      "BATCH_SIZE"),
        "missing_data": (["--trainer", "ZeroshotCLIP", "--root", str(tmp_path / "nothing"),
                          "--dataset-config-file", "configs/datasets/eurosat.yaml"], "nothing"),
        "unknown_trainer": (["--trainer", "NoSuchTrainer"], "NoSuchTrainer"),
    }[case]
    base = ["--root", demo_root, "--dataset-config-file", "configs/datasets/demo.yaml",
            "--config-file", "configs/trainers/CoOp/tiny_vit_ep10.yaml"]
    runs = [run_train(*base, "--output-dir", tmp_path / tag, *argv, check=False,
                      fresh=tag == "fresh") for tag in ("warm", "fresh")]
    assert runs[0].returncode == 2 and runs[0].stderr.startswith("error: ")
    assert says in runs[0].stderr
    _same_streams(*runs, tmp_path)
    assert not (tmp_path / "warm").exists() and not (tmp_path / "fresh").exists()


def test_a_training_run_is_the_same_warm_and_fresh(demo_root, tmp_path):
    def run(tag):
        # one no-effect key set: a warning line on stderr as well
        return run_train("--root", demo_root, "--seed", "1", "--trainer", "CoOp",
                         "--dataset-config-file", "configs/datasets/demo.yaml",
                         "--config-file", "configs/trainers/CoOp/tiny_vit_ep10.yaml",
                         "--output-dir", tmp_path / tag, "OPTIM.MAX_EPOCH", "1",
                         "DATASET.NUM_SHOTS", "1", "MODEL.HEAD.NAME", "mlp",
                         fresh=tag == "fresh")

    run("first")  # writes the split and few-shot files both runs below then read
    warm, fresh = run("warm"), run("fresh")
    assert "warning: " in warm.stderr
    _same_streams(warm, fresh, tmp_path)
    results = []
    for tag in ("warm", "fresh"):
        with open(tmp_path / tag / "results.json") as f:
            r = json.load(f)
        results.append((r["overall"], [t["value"] for t in r["tasks"]], r["config_digest"]))
    assert results[0] == results[1]
    assert sorted(os.listdir(tmp_path / "warm")) == sorted(os.listdir(tmp_path / "fresh"))
