"""One run over two processes: `torchrun --nproc_per_node 2 train.py` (gloo on CPU) ends
with the prompt parameters (to 1e-5) and metrics of the one-process run with the same
global batch, writes only from rank 0, and resumes exactly."""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT

# batch 7 over 2 ranks: shares of 4 and 3 samples, so the weighting of unequal shares counts
FLAGS = ["--seed", "1", "--dataset-config-file", "configs/datasets/demo.yaml"]
OPTS = ["DATASET.NUM_SHOTS", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "7"]
METHODS = {
    "CoOp": (["--trainer", "CoOp", "--config-file", "configs/trainers/CoOp/tiny_vit_ep10.yaml"],
             ["OPTIM.LR", "0.01"]),
    "SoftCPT": (["--trainer", "SoftCPT", "--config-file",
                 "configs/trainers/SoftCPT/tiny_vit_ep10.yaml"], ["OPTIM.LR", "0.0003"]),
}


def args(method, epochs, *extra):
    flags, opts = METHODS[method]
    return [*FLAGS, *flags, *OPTS, *opts, "OPTIM.MAX_EPOCH", str(epochs), *extra]


def train(nproc, out, root, *argv):
    cmd = [sys.executable]
    if nproc > 1:
        cmd += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd += [osp.join(ROOT, "train.py"), "--root", root, "--output-dir", str(out), *argv]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def last_state(out):
    """{model/key: tensor} of the last epoch checkpoint of every model in OUT."""
    state = {}
    for pointer in glob.glob(osp.join(out, "*", "checkpoint")):
        with open(pointer) as f:
            name = f.readline().strip()
        ckpt = torch.load(osp.join(osp.dirname(pointer), name), weights_only=True)
        for k, v in ckpt["state_dict"].items():
            state[f"{osp.basename(osp.dirname(pointer))}/{k}"] = v.float()
    assert state
    return state


def metrics(out):
    with open(osp.join(out, "results.json")) as f:
        r = json.load(f)
    return r["overall"], [t["value"] for t in r["tasks"]], r["epoch"]


def assert_same_run(a, b):
    sa, sb = last_state(a), last_state(b)
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert torch.allclose(sa[k], sb[k], atol=1e-5, rtol=0), \
            (k, (sa[k] - sb[k]).abs().max().item())
    ma, mb = metrics(a), metrics(b)
    assert ma[2] == mb[2]
    assert ma[0] == pytest.approx(mb[0], abs=1e-9)
    assert ma[1] == pytest.approx(mb[1], abs=1e-9)


@pytest.mark.parametrize("method", ["CoOp", "SoftCPT"])
def test_two_process_gloo_run_equals_one_process(demo_root, tmp_path, method):
    one, two = tmp_path / "one", tmp_path / "two"
    train(1, one, demo_root, *args(method, 2))
    proc = train(2, two, demo_root, *args(method, 2))
    assert_same_run(one, two)
    # rank 0 alone wrote the log: one "Finish training", not two
    with open(two / "log.txt") as f:
        assert f.read().count("Finish training") == 1
    assert proc.stdout.count("Finish training") == 1


def test_two_process_resume_is_exact(demo_root, tmp_path):
    """A DDP run cut after epoch 1 (its checkpoint then is all a crash leaves) and resumed
    with --resume ends as the uninterrupted one-process run."""
    argv = args("CoOp", 3, "TRAIN.CHECKPOINT_FREQ", "1")
    control, work = tmp_path / "control", tmp_path / "work"
    train(1, control, demo_root, *argv)
    train(2, work, demo_root, *argv)
    # the state after epoch 1 of a crash: the epoch-1 checkpoint, nothing later
    os.remove(work / "results.json")
    for f in glob.glob(str(work / "prompt_learner" / "model.pth.tar-*")):
        if not f.endswith("-1"):
            os.remove(f)
    (work / "prompt_learner" / "checkpoint").write_text("model.pth.tar-1\n")
    proc = train(2, work, demo_root, "--resume", work, *argv)
    assert "resuming at epoch 2" in proc.stdout
    assert_same_run(control, work)


@pytest.mark.cuda
def test_two_gpu_nccl_run_equals_one_gpu(demo_root, tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs (NCCL)")
    one, two = tmp_path / "one", tmp_path / "two"
    fp32 = ["TRAINER.COOP.PREC", "fp32"]
    train(1, one, demo_root, *args("CoOp", 2, *fp32))
    train(2, two, demo_root, *args("CoOp", 2, *fp32))
    assert_same_run(one, two)
