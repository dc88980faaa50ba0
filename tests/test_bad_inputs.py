"""Each bad input: one line naming the problem and the fix, exit code 2,
no half-written results."""
import os
import shutil

import pytest

from tests.conftest import run_train

DEMO = ["--dataset-config-file", "configs/datasets/demo.yaml",
        "--config-file", "configs/trainers/CoOp/tiny_vit_ep10.yaml"]


def fails_with(*argv, env=None):
    proc = run_train(*argv, check=False, env=env)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


def no_partial_files(out):
    for dirpath, _, files in os.walk(out):
        assert "results.json" not in files
        assert not [f for f in files if f.startswith(".tmp-")], files


def test_unknown_trainer(demo_root, tmp_path):
    line = fails_with("--root", demo_root, "--trainer", "CoOq", "--output-dir", tmp_path, *DEMO)
    assert "unknown trainer 'CoOq'" in line and "CoOp" in line


def test_unknown_dataset(demo_root, tmp_path):
    line = fails_with("--root", demo_root, "--trainer", "CoOp", "--output-dir", tmp_path,
                      "--config-file", "configs/trainers/CoOp/tiny_vit_ep10.yaml",
                      "DATASET.NAME", "Demoo")
    assert "unknown dataset 'Demoo'" in line and "Demo" in line


def test_unknown_config_key(demo_root, tmp_path):
    line = fails_with("--root", demo_root, "--trainer", "CoOp", "--output-dir", tmp_path, *DEMO,
                      "TRAINER.COOP.NCTX", "4")
    assert "unknown config key 'TRAINER.COOP.NCTX'" in line
    bad = tmp_path / "bad.yaml"
    bad.write_text("OPTIM:\n  LRR: 0.1\n")
    line = fails_with("--root", demo_root, "--trainer", "CoOp", "--output-dir", tmp_path,
                      "--config-file", str(bad))
    assert "OPTIM.LRR" in line and str(bad) in line


def test_missing_dataset_folder(tmp_path):
    line = fails_with("--root", tmp_path / "nowhere", "--trainer", "CoOp",
                      "--output-dir", tmp_path / "out",
                      "--dataset-config-file", "configs/datasets/eurosat.yaml",
                      "--config-file", "configs/trainers/CoOp/tiny_vit_ep10.yaml")
    assert str(tmp_path / "nowhere" / "eurosat") in line and "DATASETS.md" in line
    no_partial_files(tmp_path / "out")


def test_missing_weights_offline(demo_root, tmp_path):
    line = fails_with("--root", demo_root, "--trainer", "CoOp", "--output-dir", tmp_path / "o",
                      *DEMO, "MODEL.BACKBONE.NAME", "RN50",
                      env={"CLIP_CACHE": str(tmp_path / "cache"), "CLIP_OFFLINE": "1"})
    assert str(tmp_path / "cache" / "RN50.pt") in line and "MODEL.BACKBONE.PATH" in line
    no_partial_files(tmp_path / "o")


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image(demo_root, tmp_path, workers):
    root = tmp_path / "data"
    shutil.copytree(os.path.join(demo_root, "demo_digits"), root / "demo_digits")
    with open(root / "demo_digits" / "split_demo_digit.json") as f:
        import json
        victim = json.load(f)["test"][0][0]
    (root / "demo_digits" / "images" / victim).write_bytes(b"not a png")
    out = tmp_path / "out"
    line = fails_with("--root", root, "--trainer", "CoOp", "--output-dir", out, *DEMO,
                      "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1",
                      "DATALOADER.NUM_WORKERS", str(workers))
    assert "cannot read image" in line and victim in line
    no_partial_files(out)


def test_more_shots_than_images_warns_and_goes_on(demo_root, tmp_path):
    proc = run_train("--root", demo_root, "--trainer", "ZeroshotCLIP", "--output-dir", tmp_path,
                     "--dataset-config-file", "configs/datasets/demo.yaml",
                     "--config-file", "configs/trainers/ZeroshotCLIP/tiny_vit.yaml",
                     "--seed", "1", "DATASET.NUM_SHOTS", "150")
    assert "fewer than 150 images" in proc.stderr
    assert "zero (" in proc.stderr  # names the classes and their counts
    assert os.path.exists(tmp_path / "results.json")


def test_old_suite_marker_warns_in_train_py(demo_root, tmp_path):
    """A dataset config still marked with the old '# suite' first line (no DATASET.SUITE):
    the run goes on, with one warning line saying what to add."""
    config = tmp_path / "demo_old.yaml"
    with open(os.path.join(os.path.dirname(__file__), "..", "configs", "datasets",
                           "demo.yaml")) as f:
        text = f.read().replace("  SUITE: True\n", "")
    config.write_text("# suite: the demo, three tasks\n" + text)
    proc = run_train("--root", demo_root, "--trainer", "ZeroshotCLIP", "--no-train",
                     "--dataset-config-file", config, "--output-dir", tmp_path / "o",
                     "--config-file", "configs/trainers/ZeroshotCLIP/tiny_vit.yaml")
    warned = [ln for ln in proc.stderr.splitlines() if "'# suite' marker" in ln]
    assert warned == [f"warning: {config} starts with the old '# suite' marker, which no longer "
                      "makes it a suite (it gets the single-dataset schedule): add "
                      "DATASET.SUITE True to it"]
