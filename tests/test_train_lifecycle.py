"""train.py end to end on the demo: loss falls, checkpoints, --resume,
--eval-only, results.json and the per-task evaluation."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, run_train
from tests.controls import LR0, assert_learned

EPOCHS = 4


def coop_args(root, out, *extra):
    return ["--root", root, "--seed", "1", "--trainer", "CoOp",
            "--dataset-config-file", "configs/datasets/demo.yaml",
            "--config-file", "configs/trainers/CoOp/tiny_vit_ep10.yaml",
            "--output-dir", out, "DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", str(EPOCHS),
            "TRAIN.CHECKPOINT_FREQ", "1", "TRAIN.CHECKPOINT_KEEP", "0", *extra]


def epoch_losses(log):
    """Mean loss per epoch from the per-batch log lines (running average at the last batch)."""
    out = {}
    for m in re.finditer(r"epoch \[(\d+)/\d+\] batch \[(\d+)/(\d+)\].*?loss [\d.]+ \(([\d.]+)\)", log):
        out[int(m.group(1))] = float(m.group(4))
    return out


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run") / "coop")
    proc = run_train(*coop_args(demo_root, out))
    with open(os.path.join(out, "results.json")) as f:
        return out, proc.stdout, json.load(f)


def test_training_loss_falls_and_results_are_per_task(trained, demo_root):
    out, log, results = trained
    losses = epoch_losses(log)
    assert sorted(losses) == list(range(1, EPOCHS + 1))
    control_out = os.path.join(os.path.dirname(out), "lr0")
    control = epoch_losses(run_train(*coop_args(demo_root, control_out, *LR0)).stdout)
    print(assert_learned([losses[e] for e in sorted(losses)],
                         [control[e] for e in sorted(control)]))
    assert [t["task"] for t in results["tasks"]] == ["DemoDigit", "DemoParity", "DemoMagnitude"]
    assert [t["metric"] for t in results["tasks"]][2] == "mean_per_class"
    mean = sum(t["value"] for t in results["tasks"]) / 3
    assert results["overall"] == pytest.approx(mean)
    assert sum(t["total"] for t in results["tasks"]) > 1500
    assert results["trainer"] == "CoOp" and results["shots"] == 4 and results["seed"] == 1
    # log.txt beside results.json, TensorBoard scalars, one checkpoint per epoch
    assert os.path.exists(os.path.join(out, "log.txt"))
    assert any(f.startswith("events.") for f in os.listdir(os.path.join(out, "tensorboard")))
    saved = sorted(os.listdir(os.path.join(out, "prompt_learner")))
    assert saved == ["checkpoint"] + [f"model.pth.tar-{e}" for e in range(1, EPOCHS + 1)]
    assert "lr " in log and "eta " in log and "acc " in log


def test_checkpoints_are_plain_state_dicts(trained):
    import torch
    ckpt = torch.load(os.path.join(trained[0], "prompt_learner", f"model.pth.tar-{EPOCHS}"),
                      weights_only=True)
    assert ckpt["epoch"] == EPOCHS
    assert set(ckpt["state_dict"]) == {"ctx"}  # no class-name buffers
    assert "optimizer" in ckpt and "scheduler" in ckpt and "rng_state" in ckpt


def test_eval_only_reproduces_trained_accuracy(trained, demo_root, tmp_path):
    out, _, results = trained
    proc = run_train("--root", demo_root, "--seed", "1", "--trainer", "CoOp",
                     "--dataset-config-file", "configs/datasets/demo.yaml",
                     "--config-file", "configs/trainers/CoOp/tiny_vit_ep10.yaml",
                     "--output-dir", str(tmp_path / "eval"), "--eval-only", "--model-dir", out,
                     "--load-epoch", str(EPOCHS), "DATASET.NUM_SHOTS", "4")
    with open(tmp_path / "eval" / "results.json") as f:
        again = json.load(f)
    assert again["overall"] == pytest.approx(results["overall"], abs=1e-9)
    assert [t["value"] for t in again["tasks"]] == pytest.approx([t["value"] for t in results["tasks"]])
    assert f"model.pth.tar-{EPOCHS}" in proc.stdout


def test_interrupted_run_resumes_to_the_same_result(trained, demo_root, tmp_path):
    """Kill a run (SIGKILL) after its first checkpoint, resume it: the final
    accuracy equals the uninterrupted run's."""
    out = str(tmp_path / "killed")
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.Popen([sys.executable, "train.py", *coop_args(demo_root, out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    pointer = os.path.join(out, "prompt_learner", "checkpoint")
    deadline = time.time() + 300
    while not os.path.exists(pointer) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(out, "results.json")), "killed too late"
    with open(pointer) as f:
        done = int(f.read().strip().rsplit("-", 1)[1])
    assert done < EPOCHS
    resumed = run_train("--resume", *coop_args(demo_root, out))
    assert f"resuming at epoch {done + 1}" in resumed.stdout
    with open(os.path.join(out, "results.json")) as f:
        final = json.load(f)
    assert final["overall"] == pytest.approx(trained[2]["overall"], abs=1e-9)


def test_best_val_model_selection(demo_root, tmp_path):
    out = str(tmp_path / "best")
    proc = run_train(*coop_args(demo_root, out, "TEST.FINAL_MODEL", "best_val",
                                "OPTIM.MAX_EPOCH", "2"))
    assert "Evaluate on the *val* set" in proc.stdout
    assert os.path.exists(os.path.join(out, "prompt_learner", "model-best.pth.tar"))
    assert "Deploy the model with the best val performance" in proc.stdout


def test_resumed_best_val_run_keeps_the_best_so_far(demo_root, tmp_path):
    """Checkpoints carry the best validation result so far; a best_val run
    resumed from epoch 1 picks the same model as the uninterrupted run."""
    import shutil

    import torch

    opts = ("TEST.FINAL_MODEL", "best_val", "OPTIM.MAX_EPOCH", "3")
    full = tmp_path / "full"
    log = run_train(*coop_args(demo_root, str(full), *opts)).stdout
    vals = [float(v) for v in re.findall(r"Evaluate on the \*val\* set.*?\* accuracy \(mean over "
                                         r"3 tasks\): ([\d.]+)%", log, re.S)]
    assert len(vals) == 3, vals
    for epoch in (1, 2, 3):
        ckpt = torch.load(full / "prompt_learner" / f"model.pth.tar-{epoch}", weights_only=True)
        assert ckpt["best_result"] == pytest.approx(max(vals[:epoch]), abs=0.01)
    shutil.copytree(full, tmp_path / "resumed")
    (tmp_path / "resumed" / "prompt_learner" / "checkpoint").write_text("model.pth.tar-1\n")
    run_train("--resume", *coop_args(demo_root, str(tmp_path / "resumed"), *opts))
    best = [torch.load(d / "prompt_learner" / "model-best.pth.tar", weights_only=True)
            for d in (full, tmp_path / "resumed")]
    assert best[0]["epoch"] == best[1]["epoch"]
    assert torch.equal(best[0]["state_dict"]["ctx"], best[1]["state_dict"]["ctx"])
    with open(full / "results.json") as f, open(tmp_path / "resumed" / "results.json") as g:
        assert json.load(f)["overall"] == pytest.approx(json.load(g)["overall"], abs=1e-9)
