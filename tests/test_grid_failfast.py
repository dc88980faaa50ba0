"""The grid runner fails fast and shows why: one preflight for missing data and weights,
a failed run's error line in its own output whatever the worker count, flags that would
be ignored refused, a stopped grid stops its runs, a folder owned by a live run or by
another config's unfinished run is never written into."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT
from tests.test_grid import GRID, grid

RUN = "output/demo/CoOp/tiny_vit_ep10_1shots/nctx5_cscFalse_ctpend/seed1"


def test_missing_data_and_weights_fail_once_naming_everything(tmp_path, demo_root):
    empty = tmp_path / "empty"
    empty.mkdir()
    t0 = time.time()
    proc = grid("--methods", "coop", "zsclip", "--datasets", "eurosat", "dtd", "--shots", "1",
                "2", "--seeds", "1", "2", cwd=tmp_path, data=str(empty), check=False)
    seconds = time.time() - t0
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the grid's runs need 3 missing"), lines
    line = lines[0]
    assert "EuroSAT" in line and "DTD" in line and "backbone rn50" in line
    assert "tools/check_data.py --root" in line and "--method coop" in line
    assert not (tmp_path / "output").exists()  # nothing started, nothing written
    print(f"preflight failed after {seconds:.1f} s")


def test_flags_that_would_be_ignored_are_refused(tmp_path, demo_root):
    for argv, words in ((["--gpus", ","], "names no GPU"),
                        (["--slurm-time", "30", "--slurm-partition", "gpu"],
                         "only apply with --executor slurm")):
        proc = grid("--methods", "coop", "--datasets", "demo", *argv, cwd=tmp_path,
                    data=demo_root, check=False)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], lines


def test_zero_shot_runs_once_unless_asked(tmp_path, demo_root):
    env = {**os.environ, "DATA": demo_root, "SEEDS": "1 2 3", "DRY_RUN": "1"}
    proc = subprocess.run(["bash", osp.join(ROOT, "scripts/zsclip/main.sh"), "demo"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("[run] ") == 1  # (ZS_SEEDS="1 2" asks for two: common.sh)


def test_tiny_open_clip_archs_get_the_tiny_recipe():
    from tools.grid_plan import expand

    runs = expand(dict(methods=["coop"], datasets=["demo"], shots=["4"], seeds=["1"],
                       backbones=["open_clip:tiny-ViT"], pretrained="random"))
    assert "/CoOp/open_clip:tiny-ViT@random_ep10_4shots/" in runs[0].out
    assert runs[0].argv[runs[0].argv.index("--config-file") + 1].endswith("tiny_vit_ep10.yaml")


def _wait(pred, proc, limit=300):
    end = time.time() + limit
    while time.time() < end and proc.poll() is None:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (reaped later by init) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_stops_the_grids_runs_and_a_live_run_keeps_its_folder(tmp_path, demo_root):
    spec = ["--methods", "coop", "--datasets", "demo", "--shots", "1", "--seeds", "1",
            "--opts", "OPTIM.MAX_EPOCH", "3000"]
    proc = subprocess.Popen([sys.executable, GRID, "--data", demo_root, *spec], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    lock = tmp_path / RUN / ".run.lock"
    try:
        assert _wait(lambda: lock.exists() and lock.read_text().strip(), proc), "never started"
        child = int(lock.read_text())
        # while it runs, a second call leaves the folder to its owner
        other = grid(*spec, cwd=tmp_path, data=demo_root)
        assert f"running: {RUN} (process {child})" in other.stdout
        assert "0 done" in other.stdout and _alive(child)
        # and train.py itself refuses the folder
        direct = subprocess.run([sys.executable, osp.join(ROOT, "train.py"), "--root",
                                 demo_root, "--trainer", "CoOp", "--output-dir", str(tmp_path / RUN),
                                 "--resume", "--dataset-config-file",
                                 osp.join(ROOT, "configs/datasets/demo.yaml"), "--config-file",
                                 osp.join(ROOT, "configs/trainers/CoOp/tiny_vit_ep10.yaml"),
                                 "--seed", "1", "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH",
                                 "3000", "TRAINER.COOP.CSC", "False",
                                 "TRAINER.COOP.CLASS_TOKEN_POSITION", "end"],
                                capture_output=True, text=True, timeout=600)
        assert direct.returncode == 2 and "is in use by another run" in direct.stderr
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        end = time.time() + 60
        while _alive(child) and time.time() < end:
            time.sleep(0.05)
        assert not _alive(child), "the grid's train.py outlived the grid"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / RUN / "results.json").exists()


def test_another_configs_unfinished_run_is_moved_aside(tmp_path, demo_root):
    spec = ["--methods", "coop", "--datasets", "demo", "--shots", "1", "--seeds", "1"]
    # an unfinished run of another config in the grid's folder (its checkpoint, no record)
    out = tmp_path / RUN
    subprocess.run([sys.executable, osp.join(ROOT, "train.py"), "--root", demo_root,
                    "--trainer", "CoOp", "--output-dir", str(out), "--dataset-config-file",
                    osp.join(ROOT, "configs/datasets/demo.yaml"), "--config-file",
                    osp.join(ROOT, "configs/trainers/CoOp/tiny_vit_ep10.yaml"), "--seed", "1",
                    "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1", "TRAIN.CHECKPOINT_FREQ",
                    "1", "TEST.NO_TEST", "True", "OPTIM.LR", "0.5"],
                   check=True, capture_output=True, timeout=600)
    assert (out / "prompt_learner" / "checkpoint").exists()
    assert not (out / "results.json").exists()
    proc = grid(*spec, "--opts", "OPTIM.MAX_EPOCH", "1", cwd=tmp_path, data=demo_root)
    assert f"Config changed: moved {RUN} aside" in proc.stdout
    assert "1 done, 0 skipped, 0 failed" in proc.stdout and (out / "results.json").exists()
