"""No silently wrong results.json (issue 10, parts A, B, E and the config keys).

Every bad input, run through the real train.py, ends with one line
``error: ...`` naming the problem and the fix, exit code 2, and nothing
written into an existing run folder; where a warning is the right answer the
run goes on and its result equals a control run's.
"""
import json
import os
import os.path as osp
import re
import shutil
import time

import pytest
import torch

from tests.conftest import ROOT, make_cfg, run_train

CONFIG = ["--dataset-config-file", "configs/datasets/demo.yaml",
          "--config-file", "configs/trainers/CoOp/tiny_vit_ep10.yaml"]
EPOCHS = 2


def coop(root, out, *opts, trainer="CoOp", seed="1", flags=()):
    """train.py arguments of the small CoOp run these tests share (1 shot, 2 epochs)."""
    return ["--root", root, "--seed", seed, "--trainer", trainer, *CONFIG, "--output-dir", out,
            *flags, "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", str(EPOCHS),
            "TRAIN.CHECKPOINT_FREQ", "1", "TRAIN.CHECKPOINT_KEEP", "0", *opts]


def error_line(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1500:], proc.stderr[-1500:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            path = osp.join(dirpath, f)
            with open(path, "rb") as fh:
                out[osp.relpath(path, folder)] = fh.read()
    return out


def results(folder):
    with open(osp.join(folder, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def run(demo_root, tmp_path_factory):
    """A finished CoOp run with a checkpoint per epoch."""
    out = str(tmp_path_factory.mktemp("trust") / "coop")
    run_train(*coop(demo_root, out))
    return out


def copy_run(run, tmp_path, name="copy"):
    dst = str(tmp_path / name)
    shutil.copytree(run, dst)
    return dst


def edit_checkpoint(folder, fn):
    """Apply ``fn`` to every checkpoint dict of ``folder``/prompt_learner."""
    mdir = osp.join(folder, "prompt_learner")
    for f in os.listdir(mdir):
        if f.startswith("model"):
            ckpt = torch.load(osp.join(mdir, f), weights_only=True)
            fn(ckpt)
            torch.save(ckpt, osp.join(mdir, f))


def old_checkpoint_with_extra_key(ckpt):  # as written before checkpoints named their trainer
    for k in ("trainer", "config_digest", "config"):
        ckpt.pop(k, None)
    ckpt["state_dict"]["ctx_old"] = ckpt["state_dict"]["ctx"].clone()


def copy_demo_images(demo_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(osp.join(demo_root, "demo_digits"), root / "demo_digits",
                    ignore=shutil.ignore_patterns("split_fewshot"))
    return str(root)


def rename_class_in_split(demo_root, tmp_path):
    """A split file made by an older dataset code that named digit 3 'tree'."""
    root = copy_demo_images(demo_root, tmp_path)
    path = osp.join(root, "demo_digits", "split_demo_digit.json")
    with open(path) as f:
        split = json.load(f)
    for part in ("train", "val", "test"):
        split[part] = [[p, y, "tree" if y == 3 else c] for p, y, c in split[part]]
    with open(path, "w") as f:
        json.dump(split, f)
    return root, path


def empty_class_folder(tmp_path):
    from tests.suite_layouts import class_folder_task
    from toolbox.data.datasets import DATASET_REGISTRY

    cls = DATASET_REGISTRY.get("KaggleFlower")
    root = str(tmp_path / "data")
    class_folder_task(root, cls, n=3)
    folder = osp.join(root, cls.dataset_dir, cls.image_dir, cls.class_table[2][0])
    for f in os.listdir(folder):
        os.remove(osp.join(folder, f))
    return root, folder


def bad_clip_weights(tmp_path):
    from trainers.clip_model import clip_state_dict

    state = clip_state_dict("tiny-vit-digits")
    # the architecture's numbers are right, one block's MLP has another shape
    state["transformer.resblocks.0.mlp.c_fc.weight"] = torch.zeros(10, 64)
    path = str(tmp_path / "not_a_clip.pt")
    torch.save(state, path)
    return path


# (id, setup(run, demo_root, tmp_path) -> (argv, folder that must stay unchanged or None),
#  substrings of the error line)
CASES = [
    # --- A: a checkpoint that does not fit is an error naming both sides ------------------
    ("eval_other_trainer",
     lambda run, root, tmp: (coop(root, str(tmp / "e"), trainer="SoftCPT",
                                  flags=["--eval-only", "--model-dir", run]), None),
     ["saved by trainer CoOp", "this run's trainer is SoftCPT", "--trainer CoOp"]),
    ("eval_other_shapes",
     lambda run, root, tmp: (coop(root, str(tmp / "e"), "TRAINER.COOP.N_CTX", "8",
                                  "TRAINER.COOP.CTX_INIT", "",
                                  flags=["--eval-only", "--model-dir", run]), None),
     ["does not fit", "ctx (5, 64) in the checkpoint, (8, 64) in the model"]),
    ("eval_other_backbone",  # the tiny RN's text tower has the same width: shapes fit
     lambda run, root, tmp: ([a.replace("tiny_vit_ep10", "tiny_rn_ep10") for a in coop(
         root, str(tmp / "e"), flags=["--eval-only", "--model-dir", run])], None),
     ["was trained on backbone tiny_vit, but this run's backbone is tiny_rn",
      "MODEL.BACKBONE.NAME tiny_vit"]),
    ("eval_missing_keys",  # CoCoOp's meta network is not in a CoOp checkpoint
     lambda run, root, tmp: (edit_checkpoint(c := copy_run(run, tmp), old_checkpoint_with_extra_key)
                             or coop(root, str(tmp / "e"), trainer="CoCoOp",
                                     flags=["--eval-only", "--model-dir", c]), None),
     ["does not fit this CoCoOp model", "missing in the checkpoint: meta_net",
      "not in the model: ctx_old"]),
    ("eval_unexpected_keys",
     lambda run, root, tmp: (edit_checkpoint(c := copy_run(run, tmp), old_checkpoint_with_extra_key)
                             or coop(root, str(tmp / "e"), flags=["--eval-only", "--model-dir", c]),
                             None),
     ["does not fit this CoOp model", "not in the model: ctx_old"]),
    # --- A: an output folder holding another config's run ----------------------------------
    ("other_config_into_run_folder",
     lambda run, root, tmp: ((c := copy_run(run, tmp)) and coop(root, c, "DATASET.NUM_SHOTS", "2",
                                                                "OPTIM.LR", "0.5"), c),
     ["holds a run of another config", "DATASET.NUM_SHOTS 1 there, 2 here",
      "OPTIM.LR 0.001 there, 0.5 here", "new --output-dir", "--resume"]),
    ("other_seed_into_run_folder",
     lambda run, root, tmp: ((c := copy_run(run, tmp)) and coop(root, c, seed="2"), c),
     ["holds a run of another config", "SEED 1 there, 2 here"]),
    ("eval_of_other_config_into_run_folder",
     lambda run, root, tmp: ((c := copy_run(run, tmp)) and coop(
         root, c, "DATASET.SUBSAMPLE_CLASSES", "new", flags=["--eval-only", "--model-dir", run]), c),
     ["holds a run of another config", "DATASET.SUBSAMPLE_CLASSES all there, new here"]),
    # a folder without checkpoints (e.g. ZS-CLIP): results.json's digest refuses it, and its
    # config.yaml names the keys (without one the refusal names none: one run fewer here)
    ("results_and_config_of_other_config",
     lambda run, root, tmp: (os.makedirs(tmp / "zs") or [shutil.copy(osp.join(run, f), tmp / "zs")
                                                         for f in ("results.json", "config.yaml")]
                             and coop(root, str(tmp / "zs"), "OPTIM.LR", "0.5"), str(tmp / "zs")),
     ["holds a run of another config (results.json: OPTIM.LR 0.001 there, 0.5 here)",
      "--output-dir"]),
    ("resume_other_config",
     lambda run, root, tmp: ((c := copy_run(run, tmp)) and coop(root, c, "OPTIM.LR", "0.5",
                                                                flags=["--resume"]), c),
     ["--resume", "written with another config", "OPTIM.LR 0.001 there, 0.5 here"]),
    ("resume_other_trainer",
     lambda run, root, tmp: ((c := copy_run(run, tmp)) and coop(root, c, trainer="CoCoOp",
                                                                flags=["--resume"]), c),
     ["--resume", "written with another config", "TRAINER.NAME CoOp there, CoCoOp here"]),
    ("resume_missing_folder",
     lambda run, root, tmp: (coop(root, str(tmp / "o"), flags=["--resume", str(tmp / "nowhere")]),
                             None),
     ["--resume: folder not found", "nowhere"]),
    ("resume_explicit_output_folder_not_there",  # only a bare --resume may start from scratch
     lambda run, root, tmp: (coop(root, str(tmp / "o"), flags=["--resume", str(tmp / "o")]),
                             None),
     ["--resume: folder not found", "drop --resume to train from scratch"]),
    ("resume_without_checkpoint",
     lambda run, root, tmp: (os.makedirs(tmp / "r") or coop(root, str(tmp / "o"),
                                                           flags=["--resume", str(tmp / "r")]),
                             None),
     ["--resume: no checkpoint in", "drop --resume"]),
    # --- A: prompts over 77 tokens, split files of older dataset code ------------------------
    ("prompt_over_77_tokens",
     lambda run, root, tmp: (coop(root, str(tmp / "o"), "TRAINER.COOP.N_CTX", "80",
                                  "TRAINER.COOP.CTX_INIT", ""), None),
     ["more than the text encoder's 77", "smaller N_CTX or a shorter class name"]),
    ("split_file_with_old_class_names",
     lambda run, root, tmp: (coop(rename_class_in_split(root, tmp)[0], str(tmp / "o")), None),
     ["split_demo_digit.json was made by an older version", "label 3: 'tree' in the file, "
      "'three' in the code", "delete"]),
    # --- B: bad values and files -------------------------------------------------------------
    ("malformed_yaml",
     lambda run, root, tmp: ((tmp / "bad.yaml").write_text('OPTIM:\n  LR: [0.1\n  NAME: "sgd"\n')
                             and ["--root", root, "--trainer", "CoOp", "--output-dir",
                                  str(tmp / "o"), "--config-file", str(tmp / "bad.yaml")], None),
     ["bad.yaml is not valid YAML", "line"]),
    ("batch_size_0",
     lambda run, root, tmp: (coop(root, str(tmp / "o"), "DATALOADER.TRAIN_X.BATCH_SIZE", "0"), None),
     ["DATALOADER.TRAIN_X.BATCH_SIZE must be 1 or more, got 0"]),
    ("subsample_classes_middle",
     lambda run, root, tmp: (coop(root, str(tmp / "o"), "DATASET.SUBSAMPLE_CLASSES", "middle"),
                             None),
     ["DATASET.SUBSAMPLE_CLASSES must be one of ('all', 'base', 'new'), got 'middle'"]),
    ("negative_max_epoch",
     lambda run, root, tmp: (coop(root, str(tmp / "o"), "OPTIM.MAX_EPOCH", "-3"), None),
     ["OPTIM.MAX_EPOCH must be 0 or more, got -3"]),
    ("negative_num_shots",
     lambda run, root, tmp: (coop(root, str(tmp / "o"), "DATASET.NUM_SHOTS", "-4"), None),
     ["DATASET.NUM_SHOTS must be a number of images per class", "got -4"]),
    ("output_folder_not_writable",  # a file where the folder should be (root can write anywhere else)
     lambda run, root, tmp: ((tmp / "file").write_text("x") and coop(root, str(tmp / "file" / "out")),
                             None),
     ["cannot write to output folder", "choose a writable --output-dir"]),
    ("weights_that_are_no_clip",
     lambda run, root, tmp: (coop(root, str(tmp / "o"), "MODEL.BACKBONE.PATH",
                                  bad_clip_weights(tmp)), None),
     ["do not form a CLIP model; give a CLIP weights file with MODEL.BACKBONE.PATH",
      "size mismatch for transformer.resblocks.0.mlp.c_fc.weight"]),
    ("weights_without_clip_tensors",  # e.g. an image classifier's state dict
     lambda run, root, tmp: (torch.save({"fc.weight": torch.zeros(3, 3)}, tmp / "fc.pt")
                             or coop(root, str(tmp / "o"), "MODEL.BACKBONE.PATH",
                                     str(tmp / "fc.pt")), None),
     ["do not form a CLIP model; give a CLIP weights file with MODEL.BACKBONE.PATH",
      "no tensor 'visual."]),
    ("empty_class_folder",
     lambda run, root, tmp: (["--root", (r := empty_class_folder(tmp))[0], "--seed", "1",
                              "--trainer", "ZeroshotCLIP", *CONFIG, "--output-dir", str(tmp / "o"),
                              "DATASET.NAME", "KaggleFlower"], None),
     ["holds no images", osp.join("kaggle_flower", "flowers", "rose")]),
]


@pytest.mark.parametrize("setup,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_error(run, demo_root, tmp_path, setup, expected):
    argv, unchanged = setup(run, demo_root, tmp_path)
    before = snapshot(unchanged) if unchanged else None
    line = error_line(run_train(*argv, check=False))
    for text in expected:
        assert text in line, (text, line)
    if unchanged:  # nothing written into the run folder, not even a log
        assert snapshot(unchanged) == before
    else:  # nothing half-written in the new output folder
        out = argv[argv.index("--output-dir") + 1]
        for dirpath, _, files in os.walk(out):
            assert "results.json" not in files
            assert not [f for f in files if f.startswith(".tmp-")]


def test_folder_with_only_results_of_another_config_is_refused(run, demo_root, tmp_path):
    """No checkpoint and no config.yaml (e.g. an --eval-only output): the
    results' digest alone refuses the folder (in-process: the check train.py
    runs before writing anything)."""
    from toolbox.run_folder import check_run_folder
    from toolbox.errors import UserError

    out = tmp_path / "eval"
    out.mkdir()
    shutil.copy(osp.join(run, "results.json"), out)
    argv = coop(demo_root, str(out), "OPTIM.LR", "0.5")
    cfg = make_cfg(demo_root, CONFIG[1], CONFIG[3], [a for a in argv if a not in CONFIG])
    with pytest.raises(UserError) as info:
        check_run_folder(cfg)
    assert f"output folder {out} holds a run of another config (results.json); pass a new " \
           "--output-dir" in str(info.value)
    same = make_cfg(demo_root, CONFIG[1], CONFIG[3], [a for a in coop(demo_root, str(out))
                                                      if a not in CONFIG])
    check_run_folder(same)  # its own config: accepted
    assert sorted(os.listdir(out)) == ["results.json"]


def test_same_config_continues_and_eval_epochs(run, demo_root, tmp_path):
    """Re-running the same config (up to OUTPUT_DIR, RESUME, PRINT_FREQ, ...)
    into a finished run without --resume continues it, as in Dassl and as the
    docs/reproducibility.md says: no epochs left, the result and its epoch are the run's; crash
    leftovers go. (A bare --resume in front of the overrides, which must not
    take the first KEY as its folder, is run by the resume_* cases above and
    by the control run of test_damaged_fewshot_cache_warns_and_draws_again.)"""
    c = copy_run(run, tmp_path)
    for leftover in ("prompt_learner/.tmp-model.pth.tar-3-abc", ".tmp-results.json-xyz"):
        with open(osp.join(c, leftover), "w") as f:
            f.write("half")
    proc = run_train(*coop(demo_root, c, "TRAIN.PRINT_FREQ", "3"))
    assert f"resuming at epoch {EPOCHS + 1}" in proc.stdout
    again = results(c)
    assert again["epoch"] == EPOCHS and again["shots"] == 1
    assert again["overall"] == pytest.approx(results(run)["overall"], abs=1e-9)
    assert not [f for d, _, fs in os.walk(c) for f in fs if f.startswith(".tmp-")]
    # --eval-only: the epoch of the checkpoint loaded
    for load, epoch in ((["--load-epoch", "1"], 1), ([], EPOCHS)):
        out = str(tmp_path / f"eval{epoch}")
        run_train(*coop(demo_root, out, flags=["--eval-only", "--model-dir", run, *load]))
        assert results(out)["epoch"] == epoch


def test_best_val_results_name_the_best_epoch(demo_root, tmp_path):
    """With a learning rate of 0 every epoch validates alike, so the best
    (first strictly better) epoch is 1 of 2; results.json says so."""
    out = str(tmp_path / "best")
    run_train(*coop(demo_root, out, "TEST.FINAL_MODEL", "best_val", "OPTIM.LR", "0.0",
                    "OPTIM.WARMUP_EPOCH", "0"))
    best = torch.load(osp.join(out, "prompt_learner", "model-best.pth.tar"), weights_only=True)
    assert best["epoch"] == 1
    assert results(out)["epoch"] == 1


def test_seed_0_is_a_seed_and_no_effect_keys_warn_once(demo_root, tmp_path):
    root = copy_demo_images(demo_root, tmp_path)
    cache_dir = osp.join(root, "demo_digits", "split_fewshot")
    os.makedirs(cache_dir)
    stale = osp.join(cache_dir, ".tmp-DemoDigit_shot_1-seed_0.json-old")
    with open(stale, "w") as f:
        f.write("{")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    out = str(tmp_path / "zs")
    proc = run_train("--root", root, "--seed", "0", "--trainer", "ZeroshotCLIP",
                     "--dataset-config-file", "configs/datasets/demo.yaml",
                     "--config-file", "configs/trainers/ZeroshotCLIP/tiny_vit.yaml",
                     "--output-dir", out, "DATASET.NUM_SHOTS", "1",
                     "MODEL.HEAD.NAME", "mlp", "INPUT.RANDAUGMENT_N", "3")
    assert "Setting fixed seed: 0" in proc.stdout
    assert results(out)["seed"] == 0 and results(out)["epoch"] == 0
    caches = sorted(os.listdir(cache_dir))
    assert "DemoDigit_shot_1-seed_0.json" in caches and not [c for c in caches if "seed_-1" in c]
    assert not osp.exists(stale)  # an old crash leftover in the shared cache folder
    warned = [ln for ln in proc.stderr.splitlines() if "kept for Dassl compatibility" in ln]
    assert sorted(warned) == [
        "warning: INPUT.RANDAUGMENT_N is kept for Dassl compatibility; no effect "
        "(see toolbox/config.py)",
        "warning: MODEL.HEAD.NAME is kept for Dassl compatibility; no effect "
        "(see toolbox/config.py)"]


def test_damaged_fewshot_cache_warns_and_draws_again(demo_root, tmp_path):
    """A cache of the wrong JSON type or shape: one warning line, and the
    result of the run whose cache was intact."""
    root = copy_demo_images(demo_root, tmp_path)
    # (a bare --resume of a folder without checkpoints starts from scratch, as
    # tools/grid.py needs for a run interrupted before its first checkpoint)
    (tmp_path / "control").mkdir()
    proc = run_train(*coop(root, str(tmp_path / "control"), "OPTIM.MAX_EPOCH", "1",
                           flags=["--resume"]))
    assert "Nothing to resume" in proc.stdout
    cache = osp.join(root, "demo_digits", "split_fewshot", "DemoDigit_shot_1-seed_1.json")
    for i, content in enumerate(["[1, 2, 3]", '{"task": "DemoDigit", "train": 5}']):
        with open(cache, "w") as f:
            f.write(content)
        out = tmp_path / f"again{i}"
        proc = run_train(*coop(root, str(out), "OPTIM.MAX_EPOCH", "1"))
        warned = [ln for ln in proc.stderr.splitlines() if "few-shot cache" in ln]
        assert len(warned) == 1 and warned[0].startswith("warning: ignoring few-shot cache ")
        assert cache in warned[0] and "drawing again" in warned[0]
        assert results(out)["overall"] == results(tmp_path / "control")["overall"]
        with open(cache) as f:
            assert json.load(f)["task"] == "DemoDigit"  # written again, whole


def test_fewshot_cache_of_another_split_is_drawn_again(demo_root, tmp_path):
    """A few-shot cache naming images that are not in the split (e.g. made
    before the split file was made again) is not used."""
    root = copy_demo_images(demo_root, tmp_path)
    cache_dir = osp.join(root, "demo_digits", "split_fewshot")
    os.makedirs(cache_dir)
    with open(osp.join(cache_dir, "DemoDigit_shot_1-seed_1.json"), "w") as f:
        json.dump({"task": "DemoDigit", "shots": 1, "seed": 1, "val": [],
                   "train": [["0/9999.png", 0, "zero"]]}, f)
    proc = run_train(*coop(root, str(tmp_path / "o"), "OPTIM.MAX_EPOCH", "1"))
    warned = [ln for ln in proc.stderr.splitlines() if "few-shot cache" in ln]
    assert len(warned) == 1 and warned[0].startswith("warning: ignoring few-shot cache ")
    assert "not in the current split" in warned[0] and "drawing again" in warned[0]


def test_files_are_written_with_the_umask(demo_root, tmp_path):
    """Split, few-shot cache, checkpoint, results and demo image files get
    0666 less the umask (here 027: 0640), not mkstemp's 0600."""
    root = tmp_path / "fresh"
    out = tmp_path / "out"
    old = os.umask(0o027)
    try:
        run_train(*coop(str(root), str(out), "OPTIM.MAX_EPOCH", "1"))
    finally:
        os.umask(old)
    ddir = root / "demo_digits"
    files = [ddir / "split_demo_digit.json", ddir / "split_fewshot" / "DemoDigit_shot_1-seed_1.json",
             out / "results.json", out / "prompt_learner" / "model.pth.tar-1",
             out / "prompt_learner" / "checkpoint"]
    assert {str(f): oct(f.stat().st_mode & 0o777) for f in files} == \
        {str(f): oct(0o640) for f in files}
    assert oct((ddir / "images").stat().st_mode & 0o777) == oct(0o750)


# --- E: GradScaler state ------------------------------------------------------------------


def test_grad_scaler_state_is_saved_and_restored(demo_root, tmp_path):
    """The loss scale and growth tracker of a GradScaler (a CPU one here; on
    CUDA fp16 trainers make a cuda one) travel with the checkpoint."""
    from toolbox.engine import build_trainer

    cfg = make_cfg(demo_root, "configs/datasets/demo.yaml",
                   "configs/trainers/CoOp/tiny_vit_ep10.yaml",
                   ["--trainer", "CoOp", "--seed", "1", "--output-dir", str(tmp_path),
                    "DATASET.NUM_SHOTS", "1", "VERBOSE", "False"])
    trainer = build_trainer(cfg)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
    trainer.set_model_mode("train")
    trainer.num_batches = 100  # no scheduler step inside
    batch = next(iter(trainer.train_loader_x))
    for trainer.batch_idx in range(3):
        trainer.forward_backward(batch)
    state = trainer.scaler.state_dict()
    assert state["scale"] == 2.0 ** 11 and state["_growth_tracker"] == 1  # not the defaults
    trainer.save_model(0, str(tmp_path))
    ckpt = torch.load(tmp_path / "prompt_learner" / "model.pth.tar-1", weights_only=True)
    assert ckpt["scaler"] == state

    fresh = build_trainer(cfg)
    fresh.scaler = torch.amp.GradScaler("cpu")
    assert fresh.scaler.state_dict() != state
    assert fresh.resume_model_if_exist(str(tmp_path)) == 1
    assert fresh.scaler.state_dict() == state
    assert torch.equal(fresh.prompt_learner.ctx, trainer.prompt_learner.ctx)


@pytest.mark.cuda
def test_fp16_run_resumed_on_cuda_equals_the_uninterrupted_run(demo_root, tmp_path):
    """On CUDA with PREC fp16: a run stopped after epoch 1 and resumed ends
    where the uninterrupted run ends, loss scale included."""
    opts = ("TRAINER.COOP.PREC", "fp16", "OPTIM.MAX_EPOCH", "3")
    full = str(tmp_path / "full")
    run_train(*coop(demo_root, full, *opts))
    part = copy_run(full, tmp_path, "part")
    with open(osp.join(part, "prompt_learner", "checkpoint"), "w") as f:
        f.write("model.pth.tar-1\n")
    os.remove(osp.join(part, "results.json"))
    run_train(*coop(demo_root, part, *opts, flags=["--resume"]))
    a, b = (torch.load(osp.join(d, "prompt_learner", "model.pth.tar-3"), weights_only=True)
            for d in (full, part))
    assert a["scaler"]["scale"] > 0 and a["scaler"] == b["scaler"]
    assert torch.equal(a["state_dict"]["ctx"], b["state_dict"]["ctx"])
    assert results(full)["overall"] == results(part)["overall"]


# --- 5: config keys ---------------------------------------------------------------------------


def test_every_default_key_has_a_comment_and_no_effect_keys_are_marked():
    from toolbox import config

    lines = open(osp.join(ROOT, "toolbox", "config.py")).read().splitlines()
    leaves = [i for i, ln in enumerate(lines)
              if re.match(r"_C(\.[A-Z0-9_]+)+ = ", ln) and "CN()" not in ln]
    assert len(leaves) > 90
    bare = [lines[i] for i in leaves if "#" not in lines[i] and not lines[i - 1].startswith("#")]
    assert bare == []
    marked = sorted(lines[i].split(" = ")[0][3:] for i in leaves if config.NO_EFFECT in lines[i])
    listed = sorted(k for k, _ in config._leaves(config.get_cfg_default())
                    if any(k == p or (p.endswith(".") and k.startswith(p))
                           for p in config.NO_EFFECT_KEYS))
    assert marked == listed
    for key in ("MODEL.HEAD.NAME", "MODEL.INIT_WEIGHTS", "TEST.COMPUTE_CMAT", "TRAIN.COUNT_ITER",
                "DATASET.VAL_PERCENT", "DATASET.NUM_LABELED", "DATASET.STL10_FOLD",
                "DATASET.CIFAR_C_TYPE", "DATASET.CIFAR_C_LEVEL", "DATASET.ALL_AS_UNLABELED",
                "INPUT.RANDAUGMENT_N", "INPUT.RANDAUGMENT_M", "DATALOADER.TRAIN_U.BATCH_SIZE"):
        assert key in listed
    # nothing the code reads is marked: grep each marked key's last two parts outside config.py
    # (the data manager passes TRAIN_X.N_DOMAIN / N_INS to build_sampler, which ignores them,
    # and counts SOURCE_DOMAINS into num_source_domains, which nothing reads)
    passed_along = {"DATALOADER.TRAIN_X.N_DOMAIN", "DATALOADER.TRAIN_X.N_INS",
                    "DATASET.SOURCE_DOMAINS"}
    sources = ""
    # (config_pipeline.py writes train.py's Dassl flags, --target-domains, --head, into them)
    for sub in ("toolbox", "trainers", "datasets"):
        for dirpath, _, files in os.walk(osp.join(ROOT, sub)):
            for f in files:
                if f.endswith(".py") and f not in ("config.py", "config_pipeline.py"):
                    sources += open(osp.join(dirpath, f)).read()
    read = [k for k in listed if k not in passed_along
            and ("cfg." + k if "." not in k else ".".join(k.split(".")[-2:])) in sources]
    assert read == []


# --- B: the result tools -------------------------------------------------------------------------


def tool(capsys, script, *argv):
    """Run a tool's main() in this process; (exit code, stderr)."""
    import importlib

    main = importlib.import_module(f"tools.{script}").main
    try:
        code = main(list(argv)) or 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_tools_one_line_errors(run, tmp_path, capsys):
    layout = tmp_path / "output" / "demo" / "CoOp" / "tiny_vit_ep10_1shots" / "v" / "seed1"
    layout.mkdir(parents=True)
    shutil.copy(osp.join(run, "results.json"), layout)
    (tmp_path / "file").write_text("x")
    blocked = str(tmp_path / "file" / "out")
    cases = [
        (["parse_results", str(tmp_path / "output"), "--csv", blocked + ".csv"],
         ["cannot write --csv", "choose a writable path"]),
        (["parse_results", str(tmp_path / "output"), "--json", blocked + ".json"],
         ["cannot write --json"]),
        (["compare", "--root", str(tmp_path / "output"), "--dataset", "demo",
          "--shots", "1", "--plot", blocked + ".png"], ["cannot write --plot"]),
        (["compare", "--root", str(tmp_path / "output"), "--dataset", "demo",
          "--shots", "1", "--csv", blocked + ".csv"], ["cannot write --csv"]),
    ]
    bad = tmp_path / "bad" / "demo" / "CoOp" / "tiny_vit_ep10_1shots" / "v" / "seed1"
    bad.mkdir(parents=True)
    (bad / "results.json").write_text('{"tasks": 5, "overall": 1.0}')
    cases += [
        (["parse_results", str(tmp_path / "bad")], ["'tasks' is not a list", "delete"]),
        (["compare", "--root", str(tmp_path / "bad"), "--dataset", "demo", "--shots", "1"],
         ["is not a results.json written by train.py"]),
    ]
    (tmp_path / "bad.yaml").write_text('DATASET:\n  NAME: "Demo\n')
    cases.append((["check_data", "--root", str(tmp_path),
                   "--dataset-config-file", str(tmp_path / "bad.yaml")],
                  ["bad.yaml is not valid YAML", "line"]))
    for argv, expected in cases:
        code, err = tool(capsys, *argv)
        lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (argv, code, err)
        for text in expected:
            assert text in lines[0], (argv, lines[0])
