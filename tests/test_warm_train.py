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


@pytest.mark.parametrize("body", [
    "import os\n\n\ndef main():\n    raise ValueError('the run itself failed')\n\n\nmain()\n",
    "import no_such_module_of_the_run  # noqa\n",
])
def test_a_crashing_run_shows_its_own_traceback_not_the_harness(tmp_path, body):
    """A run that crashes (an exception, a broken import) reports what `python SCRIPT`
    reports: its own traceback, from its own file on, none of the harness's frames."""
    import subprocess
    import sys

    from tests import warm_train

    script = tmp_path / "crash.py"
    script.write_text(body)
    env = dict(os.environ)
    warm = warm_train.run(["--x"], env, cwd=str(tmp_path), script=str(script))
    fresh = subprocess.run([sys.executable, str(script), "--x"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert warm.returncode == fresh.returncode == 1
    assert warm.stderr == fresh.stderr and warm.stdout == fresh.stdout == ""
    assert "warm_train" not in warm.stderr and "runpy" not in warm.stderr
    assert warm.stderr.splitlines()[1] == f'  File "{script}", line ' + \
        fresh.stderr.splitlines()[1].split(", line ")[1]
