"""A bad input under torchrun (gloo, 2 processes): every rank checks its inputs before
the ranks join the process group, rank 0 alone prints the one ``error: ...`` line and
every rank exits 2. tools/torchrun.py (torchrun's own launcher, in process) then exits
2 with nothing else printed; plain torchrun adds its failure report (exit code 1)."""
import json
import os
import subprocess
import sys

from tests.conftest import ROOT

ARGS = ["--trainer", "CoOp", "--dataset-config-file", "configs/datasets/demo.yaml",
        "--config-file", "configs/trainers/CoOp/tiny_vit_ep10.yaml"]


def torchrun(launcher, root, out, *opts):
    cmd = [sys.executable, *launcher, "--standalone", "--nproc_per_node", "2", "train.py",
           "--root", root, "--output-dir", str(out), *ARGS, *opts]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_launcher_bad_key_is_one_line_and_exit_2(demo_root, tmp_path):
    proc = torchrun(["tools/torchrun.py"], demo_root, tmp_path / "o", "TRAINER.COOP.NCTX", "4")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        "error: unknown config key 'TRAINER.COOP.NCTX' in the command-line options; check its "
        "spelling against toolbox/config.py and the TRAINER groups in trainers/*.py"]
    assert proc.stdout == ""
    assert not (tmp_path / "o").exists()


def test_launcher_folder_of_another_run_is_one_line_and_exit_2(demo_root, tmp_path):
    out = tmp_path / "other"
    out.mkdir()
    with open(out / "results.json", "w") as f:
        json.dump({"config_digest": "0123456789abcdef", "overall": 50.0, "tasks": []}, f)
    proc = torchrun(["tools/torchrun.py"], demo_root, out)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: output folder {out} holds a run of "
                                                   "another config"), proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["results.json"]


def test_plain_torchrun_prints_the_error_once(demo_root, tmp_path):
    proc = torchrun(["-m", "torch.distributed.run"], demo_root, tmp_path / "o",
                    "DATALOADER.TRAIN_X.BATCH_SIZE", "0")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == ["error: DATALOADER.TRAIN_X.BATCH_SIZE must be 1 or more, got 0"]
    # torchrun's own report follows (it cannot be told a child's exit code); the first
    # failure it names is a rank's exit code 2
    assert proc.returncode == 1 and "exitcode: 2" in proc.stderr
