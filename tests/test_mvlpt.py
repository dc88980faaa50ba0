"""MCoOp (MVLPT's shared prompt) and the source-to-target protocol: the loss over the union
of the tasks' classes against a hand computation, learning against an LR-0 control, the
source prompt (averaged over runs) loaded into a target run, and tools/transfer.py."""
import json
import tempfile

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import make_cfg
from tests.controls import LR0, assert_learned, epoch_losses
from tests.test_clip_model import native_encode
from toolbox.engine import build_trainer
from toolbox.errors import UserError
from toolbox.utils import set_random_seed
from trainers.clip_model import tokenize

import datasets  # noqa: F401
import trainers  # noqa: F401

CONFIG = "configs/trainers/MCoOp/tiny_vit_ep10.yaml"


def build(root, *opts, out=None, shots=2, seed=1):
    out = out or tempfile.mkdtemp(prefix="mcoop-", dir=root)
    cfg = make_cfg(root, "configs/datasets/demo.yaml", CONFIG,
                   ["--trainer", "MCoOp", "--output-dir", out, "--seed", str(seed),
                    "DATASET.NUM_SHOTS", str(shots), "VERBOSE", "False", "TEST.NO_TEST", "True",
                    "TRAIN.PRINT_FREQ", "1000", *opts])
    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


def batch_of(trainer, per_task=2):
    ds = trainer.train_loader_x.dataset
    idx = [i for t in range(len(trainer.tasks))
           for i in [k for k, d in enumerate(ds.data_source) if d.task == t][:per_task]]
    items = [ds[i] for i in idx]
    return (torch.stack([x["img"] for x in items]), torch.tensor([x["label"] for x in items]),
            torch.tensor([x["task"] for x in items]))


def hand_text_features(trainer):
    """Every class's prompt built token by token: SOS, the first half of the context, the
    class name, the second half, '.', through CLIP's own text transformer."""
    m, ctx = trainer.clip_model, trainer.prompt_learner.ctx
    n_ctx, half = ctx.shape[0], ctx.shape[0] // 2
    feats = []
    for name in [c for t in trainer.tasks for c in t.classnames]:
        n_name = len(tokenize([name])[0].nonzero()) - 2  # without SOS and EOT
        tok = tokenize([" ".join(["X"] * n_ctx) + " " + name + "."])
        emb = m.token_embedding(tok).clone()
        name_emb = m.token_embedding(tokenize([name]))[0, 1:1 + n_name]
        emb[0, 1:1 + half] = ctx[:half]
        emb[0, 1 + half:1 + half + n_name] = name_emb
        emb[0, 1 + half + n_name:1 + n_ctx + n_name] = ctx[half:]
        feats.append(native_encode(m, emb, tok)[0])
    return F.normalize(torch.stack(feats), dim=-1)


def test_union_loss_equals_a_hand_computation(demo_root):
    trainer = build(demo_root)
    assert trainer.prompt_learner.assembler.position == "middle"
    with torch.no_grad():
        trainer.prompt_learner.ctx.add_(torch.randn_like(trainer.prompt_learner.ctx) * 0.05)
    image, label, task = batch_of(trainer)
    with torch.no_grad():
        loss, logits, target, _ = trainer.forward_train(image, label, task)
        img = F.normalize(trainer.clip_model.encode_image(image), dim=-1)
        want_logits = trainer.logit_scale * img @ hand_text_features(trainer).t()
        # union: softmax over all 14 classes of the 3 tasks, for every sample
        want = F.cross_entropy(want_logits, label)
        per_task = torch.stack([F.cross_entropy(want_logits[i:i + 1, lo:hi], label[i:i + 1] - lo)
                                for i, (lo, hi) in enumerate(
                                    trainer.tasks[int(t)].label_range for t in task)]).mean()
    assert logits.shape == (len(label), 14)
    assert torch.allclose(loss, want, atol=1e-5), (loss.item(), want.item())
    assert abs(loss.item() - per_task.item()) > 1e-3  # the union differs from per-task CE
    trainer_task = build(demo_root, "TRAINER.MCOOP.LOSS", "task")
    with torch.no_grad():
        trainer_task.prompt_learner.ctx.copy_(trainer.prompt_learner.ctx)
        loss_task = trainer_task.forward_train(image, label, task)[0]
    assert torch.allclose(loss_task, per_task, atol=1e-5), (loss_task.item(), per_task.item())


def test_mcoop_learns_on_demo_against_lr0_control(demo_root):
    opts = ("OPTIM.MAX_EPOCH", "4", "TEST.FINAL_MODEL", "last_step")
    control = epoch_losses(build(demo_root, *opts, *LR0, shots=4))
    trained = epoch_losses(build(demo_root, *opts, shots=4))
    print(assert_learned(trained, control))


def source_run(root, seed):
    """A finished 1-epoch MCoOp source run on DemoDigit + DemoParity; its folder."""
    out = tempfile.mkdtemp(prefix="mcoop-src-", dir=root)
    trainer = build(root, "DATASET.TASKS", "['DemoDigit', 'DemoParity']", "OPTIM.MAX_EPOCH", "1",
                    "OPTIM.LR", "0.05", "OPTIM.WARMUP_EPOCH", "0", out=out, seed=seed)
    trainer.train()
    return out, trainer


def test_target_run_starts_from_the_averaged_source_prompt(demo_root):
    (out1, src1), (out2, src2) = source_run(demo_root, 1), source_run(demo_root, 2)
    ctx1, ctx2 = src1.prompt_learner.ctx.detach(), src2.prompt_learner.ctx.detach()
    assert not torch.allclose(ctx1, ctx2)
    # one source run: the target's first forward is the source model's on the same input
    target = build(demo_root, "DATASET.TASKS", "['DemoParity']", "MODEL.INIT_FROM", f"['{out1}']")
    assert torch.equal(target.prompt_learner.ctx.detach(), ctx1)
    image = batch_of(target, per_task=4)[0]
    src1.set_model_mode("eval")
    target.set_model_mode("eval")
    with torch.no_grad():
        src1._eval_text = target._eval_text = None
        want = src1.model_inference(image)[:, 10:12]  # DemoParity's classes in the source
        got = target.model_inference(image)
    assert got.shape == (4, 2) and torch.allclose(got, want, atol=1e-5)
    # two source runs: their prompts averaged (upstream's avg_ckpt.py over seeds)
    both = build(demo_root, "DATASET.TASKS", "['DemoMagnitude']",
                 "MODEL.INIT_FROM", f"['{out1}', '{out2}']")
    assert torch.allclose(both.prompt_learner.ctx.detach(), (ctx1 + ctx2) / 2, atol=1e-7)
    # a run folder without a saved model is one actionable error
    with pytest.raises(UserError, match="MODEL.INIT_FROM: no saved model 'prompt_learner'"):
        build(demo_root, "MODEL.INIT_FROM", f"['{demo_root}']")


def test_transfer_tool_runs_the_protocol_and_writes_its_table(demo_root, tmp_path, capsys):
    from tools import transfer

    rc = transfer.main(["--source", "demo:DemoDigit,DemoParity", "--target", "demo:DemoMagnitude",
                        "--shots", "2", "--method", "mcoop", "--seeds", "1", "--data", demo_root,
                        "--output-root", str(tmp_path), "--opts", "OPTIM.MAX_EPOCH", "1"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "| DemoMagnitude" in text and "fine-tuned from source" in text
    table = json.load(open(tmp_path / "transfer_demo-DemoDigit+DemoParity_to_demo-DemoMagnitude_"
                                      "mcoop_2shots.json"))
    cells = table["tasks"]["DemoMagnitude"]
    assert set(cells) == {"scratch", "source", "tuned", "gain"}
    assert abs(cells["gain"] - (cells["tuned"]["mean"] - cells["scratch"]["mean"])) < 1e-9
    runs = sorted(p for p in tmp_path.rglob("log.txt") if "from-demo" in str(p))
    assert len(runs) == 2  # the source prompt as is, and fine-tuned
    for log in runs:
        assert "Initialised prompt_learner from 1 run(s) (averaged): ctx" in log.read_text()
