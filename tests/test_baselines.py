"""SoftCPT's baselines: CoOpMT's context layouts and the linear probe."""
import json
import os
import os.path as osp
import tempfile

import numpy as np
import pytest
import torch

from tests.conftest import make_cfg, run_train
from toolbox.engine import build_trainer
from toolbox.utils import set_random_seed
from trainers.linear_probe import search_c, task_metric

import datasets  # noqa: F401
import trainers  # noqa: F401


def build_mt(root, mode):
    out = tempfile.mkdtemp(prefix="coopmt-", dir=root)
    cfg = make_cfg(root, "configs/datasets/demo.yaml", "configs/trainers/CoOpMT/tiny_vit_ep10.yaml",
                   ["--trainer", "CoOpMT", "--output-dir", out, "--seed", "1",
                    "DATASET.NUM_SHOTS", "1", "VERBOSE", "False", "TEST.NO_TEST", "True",
                    "TRAINER.COOP_MT.MODE", mode, "TRAINER.COOP_MT.CTX_INIT", "",
                    "TRAINER.COOP_MT.N_CTX", "4"])
    set_random_seed(1)
    return build_trainer(cfg)


@pytest.mark.parametrize("mode,shape", [("shared", (4, 64)), ("task", (3, 4, 64)),
                                        ("class", (14, 4, 64))])
def test_coop_mt_context_shapes_and_sharing(demo_root, mode, shape):
    trainer = build_mt(demo_root, mode)
    pl = trainer.prompt_learner
    assert tuple(pl.ctx.shape) == shape  # demo: 3 tasks, 10 + 2 + 2 classes, width 64
    assert [n for n, p in pl.named_parameters() if p.requires_grad] == ["ctx"]
    before = trainer.text_features(torch.arange(14)).detach()
    torch.manual_seed(0)
    with torch.no_grad():  # change the context used by DemoParity's first class
        target = pl.ctx if mode == "shared" else pl.ctx[1 if mode == "task" else 10]
        target.add_(torch.randn_like(target))
    changed = (trainer.text_features(torch.arange(14)).detach() - before).abs().sum(1) > 1e-3
    expect = {"shared": [True] * 14,  # one context for every class of every task
              "task": [False] * 10 + [True, True] + [False, False],  # DemoParity's classes
              "class": [False] * 10 + [True] + [False] * 3}[mode]
    assert changed.tolist() == expect


def test_coop_mt_task_mode_trains_only_present_tasks(demo_root):
    trainer = build_mt(demo_root, "task")
    ds = trainer.train_loader_x.dataset
    items = [ds[i] for i, d in enumerate(ds.data_source) if d.task == 0][:4]
    image = torch.stack([x["img"] for x in items])
    label = torch.tensor([x["label"] for x in items])
    task = torch.zeros(4, dtype=torch.long)
    trainer.model_zero_grad()
    loss = trainer.forward_train(image, label, task)[0]
    loss.backward()
    grad = trainer.prompt_learner.ctx.grad
    assert grad[0].abs().sum() > 0 and grad[1:].abs().sum() == 0


def test_task_metric_is_not_swapped():
    y_true = np.array([0, 0, 0, 1])
    y_pred = np.array([0, 0, 0, 0])
    assert task_metric("accuracy", y_true, y_pred) == 75.0
    assert task_metric("mean_per_class", y_true, y_pred) == 50.0  # (100 + 0) / 2


def test_c_search_prefers_the_c_that_generalises():
    rng = np.random.RandomState(0)
    # 2 informative dimensions and 40 noise ones: strong regularisation cannot
    # fit, no regularisation overfits the noise of the 20 training points.
    def draw(n):
        y = rng.randint(0, 2, n)
        x = rng.randn(n, 42)
        x[:, :2] += 1.5 * (2 * y[:, None] - 1)
        return x, y

    x_tr, y_tr = draw(20)
    x_val, y_val = draw(400)
    c, score = search_c(x_tr, y_tr, x_val, y_val, "accuracy",
                        type("LP", (), dict(C_MIN_EXP=-6, C_MAX_EXP=6, REFINE_STEPS=3,
                                            MAX_ITER=1000)))
    assert 1e-3 < c < 1e3
    assert score > 80.0


def test_linear_probe_runs_on_demo_and_reports_each_task_metric(demo_root, tmp_path):
    out = tmp_path / "lp"
    run_train("--root", demo_root, "--seed", "1", "--trainer", "LinearProbeCLIP",
              "--dataset-config-file", "configs/datasets/demo.yaml",
              "--config-file", "configs/trainers/LinearProbeCLIP/tiny_vit.yaml",
              "--output-dir", out, "DATASET.NUM_SHOTS", "4")
    res = json.load(open(out / "results.json"))
    tasks = {t["task"]: t for t in res["tasks"]}
    assert set(tasks) == {"DemoDigit", "DemoParity", "DemoMagnitude"}
    assert tasks["DemoMagnitude"]["metric"] == "mean_per_class"
    assert tasks["DemoMagnitude"]["value"] == tasks["DemoMagnitude"]["mean_per_class"]
    assert tasks["DemoDigit"]["value"] == tasks["DemoDigit"]["accuracy"]
    assert tasks["DemoDigit"]["value"] > 50.0  # 10 classes: chance is 10%
    assert abs(res["overall"] - np.mean([t["value"] for t in tasks.values()])) < 1e-9
    assert set(res["C"]) == set(tasks) and all(c > 0 for c in res["C"].values())
    # the saved classifiers give the same results in --eval-only
    out2 = tmp_path / "lp_eval"
    run_train("--root", demo_root, "--seed", "1", "--trainer", "LinearProbeCLIP",
              "--dataset-config-file", "configs/datasets/demo.yaml",
              "--config-file", "configs/trainers/LinearProbeCLIP/tiny_vit.yaml",
              "--output-dir", out2, "--eval-only", "--model-dir", out, "DATASET.NUM_SHOTS", "4")
    res2 = json.load(open(out2 / "results.json"))
    assert [t["value"] for t in res2["tasks"]] == [t["value"] for t in res["tasks"]]


def test_linear_probe_eval_only_without_model_is_one_line_error(demo_root, tmp_path):
    proc = run_train("--root", demo_root, "--trainer", "LinearProbeCLIP",
                     "--dataset-config-file", "configs/datasets/demo.yaml",
                     "--config-file", "configs/trainers/LinearProbeCLIP/tiny_vit.yaml",
                     "--output-dir", tmp_path / "x", "--eval-only", "--model-dir",
                     tmp_path / "missing", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: no linear-probe classifiers at")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert osp.basename(str(tmp_path / "missing")) in proc.stderr


@pytest.mark.parametrize("argv,message", [
    (["scripts/softcpt/main.sh", "demo", "1", "tiny_vit", "XYZ"],
     "unknown variant 'XYZ' of method softcpt; choose from NATA"),
    (["scripts/coop_mt/main.sh", "demo", "1", "tiny_vit", "all"],
     "unknown variant 'all' of method coop_mt; choose from shared, task, class"),
    (["scripts/linear_probe/main.sh", "no_such_set", "1"], "no dataset config"),
    (["scripts/cocoop/main.sh", "demo", "x"], "SHOTS must be a number"),
    (["scripts/zsclip/main.sh"], "usage: bash scripts/zsclip/main.sh"),
    (["scripts/compare_all.sh", "demo"], "usage: bash scripts/compare_all.sh"),
])
def test_scripts_reject_bad_arguments_with_one_line(tmp_path, argv, message):
    import subprocess

    from tests.conftest import ROOT

    proc = subprocess.run(["bash", osp.join(ROOT, argv[0]), *argv[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert not (tmp_path / "output").exists()


@pytest.mark.parametrize("extra,folder,ctx_args", [
    # the tiny config's CTX_INIT "a photo of the digit" sets the context: 5 words
    ([], "nctx5_cscFalse_ctpend", []),
    # an explicit N_CTX wins and clears the config's CTX_INIT
    (["8", "True", "front"], "nctx8_cscTrue_ctpfront",
     ["TRAINER.COOP.N_CTX", "8", "TRAINER.COOP.CTX_INIT", ""]),
])
def test_coop_script_names_the_context_it_trains(tmp_path, extra, folder, ctx_args):
    import subprocess

    from tests.conftest import ROOT

    # DRY_RUN=1: tools/grid.py prints the train.py command instead of running it
    proc = subprocess.run(["bash", osp.join(ROOT, "scripts/coop/main.sh"), "demo", "4",
                           "tiny_vit", *extra], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "DRY_RUN": "1", "SEEDS": "1"})
    assert proc.returncode == 0, proc.stderr
    import shlex
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("[run] ")]
    assert len(line) == 1, proc.stdout
    argv = shlex.split(line[0][len("[run] "):])
    out = argv[argv.index("--output-dir") + 1]
    assert out == f"output/demo/CoOp/tiny_vit_ep10_4shots/{folder}/seed1"
    opts = argv[argv.index("DATASET.NUM_SHOTS"):]
    assert opts[2:2 + len(ctx_args)] == ctx_args
    assert ("TRAINER.COOP.CTX_INIT" in opts) == bool(ctx_args)


def test_linear_probe_eval_only_of_other_data_or_backbone_is_an_error(demo_root, tmp_path):
    """Saved classifiers record their tasks, classes and backbone: --eval-only
    with another task subset, the new-class half or another backbone is a
    UserError naming both sides (it was an IndexError, or silently wrong)."""
    import torch

    from tests.conftest import make_cfg
    from toolbox.engine import build_trainer
    from toolbox.errors import UserError

    def trainer(out, *opts, config="configs/trainers/LinearProbeCLIP/tiny_vit.yaml"):
        cfg = make_cfg(demo_root, "configs/datasets/demo.yaml", config,
                       ["--trainer", "LinearProbeCLIP", "--seed", "1", "--output-dir", str(out),
                        "DATASET.NUM_SHOTS", "2", "TRAINER.LINEAR_PROBE.C", "1.0",
                        "TEST.NO_TEST", "True", "VERBOSE", "False", *opts])
        return build_trainer(cfg)

    saved = tmp_path / "lp"
    trainer(saved).train()
    trainer(tmp_path / "same").load_model(str(saved))  # the same data and backbone: loads
    cases = [
        ((("DATASET.TASKS", "['DemoParity']"),),
         "tasks DemoDigit (10 classes), DemoParity (2 classes), DemoMagnitude (2 classes) there, "
         "DemoParity (2 classes) here"),
        ((("DATASET.SUBSAMPLE_CLASSES", "new"),),
         "other classes of task DemoDigit: zero, one, two... there, five, six, seven... here"),
        ((), "fit on features of backbone tiny_vit, this run's is tiny_rn"),
    ]
    for opts, detail in cases:
        config = ("configs/trainers/LinearProbeCLIP/tiny_rn.yaml" if not opts
                  else "configs/trainers/LinearProbeCLIP/tiny_vit.yaml")
        other = trainer(tmp_path / "other", *[x for kv in opts for x in kv], config=config)
        with pytest.raises(UserError) as info:
            other.load_model(str(saved))
        assert detail in str(info.value) and "DATASET.TASKS" in str(info.value)
    # a file written before the tasks were recorded: the label ranges are checked
    path = saved / "linear_probe.pt"
    state = torch.load(path, weights_only=True)
    torch.save({"classifiers": state["classifiers"]}, path)
    with pytest.raises(UserError, match=r"\(3 tasks\) do not fit this run's 1 tasks"):
        trainer(tmp_path / "old", "DATASET.TASKS", "['DemoParity']").load_model(str(saved))
