"""One run over two processes: `torchrun --nproc_per_node 2 train.py` (gloo on CPU) ends
with the prompt parameters (to 1e-5) and metrics of the one-process run with the same
global batch, writes only from rank 0, and resumes exactly; the class prompts are split
over the ranks (each encodes its share, gathered with gradients) without changing the
result."""
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
    # each rank encoded its share of the class prompts (the union of the ranks' classes)
    assert "DDP: the class prompts are split over 2 ranks" in proc.stdout


def test_two_process_resume_is_exact(demo_root, tmp_path):
    """A DDP run cut after epoch 1 (its checkpoint then is all a crash leaves) and resumed
    with --resume ends as the uninterrupted one-process run."""
    argv = args("CoOp", 3, "TRAIN.CHECKPOINT_FREQ", "1", "TRAIN.CHECKPOINT_KEEP", "0")
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


def _split_worker(rank, world, port, out):
    """One rank of test_split_text_side_gives_the_one_process_gradient."""
    import socket  # noqa: F401
    from types import SimpleNamespace

    import torch.distributed as dist
    import torch.nn.functional as F

    from toolbox.engine import distributed as ddp
    from trainers.base import ClipTrainer

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        emb, weight, x, label, classes = _split_problem()
        encoded = []

        def encode(index):
            encoded.append(index.tolist())
            return torch.tanh(emb[index] @ weight)

        host = SimpleNamespace(split_text=True, num_classes=emb.shape[0])
        start, stop = ddp.share_bounds(x.shape[0])
        feats = ClipTrainer.split_over_ranks(host, encode, classes[rank])
        logits = x[start:stop] @ feats.t()
        target = torch.searchsorted(classes[rank], label[start:stop])
        loss = F.cross_entropy(logits, target)
        ddp.weighted_loss(loss, (stop - start) / x.shape[0]).backward()
        ddp.all_reduce_gradients([weight], 1.0)
        torch.save({"grad": weight.grad, "encoded": encoded, "feats": feats.detach()},
                   osp.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _split_problem():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(11, 6, generator=g)
    weight = torch.randn(6, 4, generator=g).requires_grad_()
    x = torch.randn(7, 4, generator=g)
    # rank 0 (samples 0-3) needs classes 0-5, rank 1 (samples 4-6) classes 3-10
    label = torch.tensor([0, 5, 2, 3, 7, 10, 3])
    classes = [torch.arange(0, 6), torch.arange(3, 11)]
    return emb, weight, x, label, classes


def test_split_text_side_gives_the_one_process_gradient(tmp_path):
    """Two gloo ranks, each encoding half of the union of the classes their batches
    need, end with the one-process gradient of the global-batch loss (shares 4 and 3)."""
    import socket

    import torch.multiprocessing as mp
    import torch.nn.functional as F

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_split_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    emb, weight, x, label, classes = _split_problem()
    total = 0
    for rank, (start, stop) in enumerate([(0, 4), (4, 7)]):
        feats = torch.tanh(emb[classes[rank]] @ weight)
        target = torch.searchsorted(classes[rank], label[start:stop])
        total = total + F.cross_entropy(x[start:stop] @ feats.t(), target) * (stop - start) / 7
    total.backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # the union 0-10 (11 classes) split 6 + 5: each rank encoded only its share
    assert ranks[0]["encoded"] == [list(range(0, 6))]
    assert ranks[1]["encoded"] == [list(range(6, 11))]
    for r in range(2):
        assert torch.allclose(ranks[r]["feats"], torch.tanh(emb[classes[r]] @ weight).detach(),
                              atol=1e-6)
        assert torch.allclose(ranks[r]["grad"], weight.grad, atol=1e-6, rtol=0), \
            (ranks[r]["grad"] - weight.grad).abs().max()


@pytest.mark.cuda
def test_two_gpu_nccl_run_equals_one_gpu(demo_root, tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs (NCCL)")
    one, two = tmp_path / "one", tmp_path / "two"
    fp32 = ["TRAINER.COOP.PREC", "fp32"]
    train(1, one, demo_root, *args("CoOp", 2, *fp32))
    train(2, two, demo_root, *args("CoOp", 2, *fp32))
    assert_same_run(one, two)
