"""The frozen-feature cache: same results cold, warm and disabled; every
change of image, weights, transform or precision misses; damaged, unwritable
and full-disk caches never stop a run or give a wrong feature; parallel runs
build one store once."""
import json
import os
import os.path as osp
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, make_cfg, run_train
from toolbox.engine import build_trainer
from toolbox.features import FeatureCache, read_store, resolve_dir
from toolbox.features.store import TMP_PREFIX
from toolbox.utils import set_random_seed

import datasets  # noqa: F401
import trainers  # noqa: F401

TINY = {
    "ZeroshotCLIP": "configs/trainers/ZeroshotCLIP/tiny_vit.yaml",
    "LinearProbeCLIP": "configs/trainers/LinearProbeCLIP/tiny_vit.yaml",
    "CoOp": "configs/trainers/CoOp/tiny_vit_ep10.yaml",
    "CoCoOp": "configs/trainers/CoCoOp/tiny_vit_c4_ep10_batch1_ctxv1.yaml",
    "CoOpMT": "configs/trainers/CoOpMT/tiny_vit_ep10.yaml",
    "SoftCPT": "configs/trainers/SoftCPT/tiny_vit_ep10.yaml",
    "DualViewMI": "configs/trainers/DualViewMI/tiny_vit_ep10.yaml",
    "KgCoOp": "configs/trainers/KgCoOp/tiny_vit_ep10.yaml",
    "ProGrad": "configs/trainers/ProGrad/tiny_vit_ep10.yaml",
    "PLOT": "configs/trainers/PLOT/tiny_vit_ep10.yaml",  # caches tokens, not pooled features
    "ProtoNet": "configs/trainers/ProtoNet/tiny_vit.yaml",
}
DEMO = "configs/datasets/demo.yaml"
ENCODED = re.compile(r"Image features \((\w+)\): (\d+) from the cache, (\d+) encoded")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A data root of our own: tests here change image files."""
    from datasets.demo import ensure_demo_images

    root = tmp_path_factory.mktemp("fc_data")
    ensure_demo_images(str(root / "demo_digits"))
    return str(root)


def build(root, cache_dir, trainer="ZeroshotCLIP", *opts, tasks="['DemoDigit']"):
    out = tempfile.mkdtemp(prefix=f"{trainer}-", dir=root)
    cfg = make_cfg(root, DEMO, TINY[trainer],
                   ["--trainer", trainer, "--output-dir", out, "--seed", "1",
                    "DATASET.NUM_SHOTS", "2", "DATASET.TASKS", tasks, "VERBOSE", "False",
                    "TEST.NO_TEST", "True", "FEATURE_CACHE.DIR", str(cache_dir), *opts])
    set_random_seed(1)
    return build_trainer(cfg)


def evaluate(trainer, split="test"):
    """(results, every batch's output) of one evaluation pass."""
    outputs = []
    process = trainer.evaluator.process

    def keep(output, *rest):
        outputs.append(output.detach().clone())
        return process(output, *rest)

    trainer.evaluator.process = keep
    try:
        result = trainer.test(split)
    finally:
        trainer.evaluator.process = process
    return result, [dict(r) for r in trainer.evaluator.per_task], outputs


def counts(text, split="test"):
    """(from cache, encoded) summed over the 'Image features' lines of ``split``."""
    hits = [(int(h), int(e)) for s, h, e in ENCODED.findall(text) if s == split]
    return sum(h for h, _ in hits), sum(e for _, e in hits)


# ---- identical results ---------------------------------------------------------------

@pytest.mark.parametrize("name", list(TINY))
def test_every_trainer_evaluates_identically_cold_warm_and_disabled(data_root, tmp_path,
                                                                    capsys, name):
    tasks = "['DemoDigit', 'DemoParity']"
    trainer = build(data_root, tmp_path / "cache", name, tasks=tasks)
    if name in ("LinearProbeCLIP", "ProtoNet"):
        trainer.fit()
    if name == "CoCoOp":  # prompts per image: every 20th test image of both tasks (fast)
        from toolbox.data.data_manager import build_data_loader

        loader = trainer.test_loader
        trainer.test_loader = build_data_loader(
            trainer.cfg, "SequentialSampler", data_source=trainer.dm.dataset.test[::20],
            batch_size=loader.batch_size, tfm=loader.dataset.transform, is_train=False)
    n = len(trainer.test_loader.dataset.data_source)
    assert len({it.task for it in trainer.test_loader.dataset.data_source}) == 2
    trainer._feature_cache = None  # disabled: images through the encoder
    off = evaluate(trainer)
    capsys.readouterr()
    trainer._feature_cache = False  # rebuilt from the config on first use
    cold = evaluate(trainer)
    assert counts(capsys.readouterr().out) == (0, n)
    warm = evaluate(trainer)
    assert counts(capsys.readouterr().out) == (n, 0)
    for run in (cold, warm):
        assert run[0] == off[0] and run[1] == off[1]
        assert len(run[2]) == len(off[2])
        assert all(torch.equal(a, b) for a, b in zip(run[2], off[2]))


def test_warm_pass_reads_no_image(data_root, tmp_path, monkeypatch, capsys):
    trainer = build(data_root, tmp_path / "cache", "CoOp")
    first = evaluate(trainer)
    import toolbox.data.data_manager as dm

    def no_images(path):
        raise AssertionError(f"image {path} decoded on a warm pass")

    monkeypatch.setattr(dm, "read_image", no_images)
    monkeypatch.setattr(trainer, "encode_image", lambda image: no_images("(encoder)"))
    again = evaluate(trainer)
    assert again[0] == first[0]
    assert all(torch.equal(a, b) for a, b in zip(again[2], first[2]))


def test_evaluation_leaves_the_global_rng_alone(data_root, tmp_path):
    """The image loader draws a seed from the global RNG, cached batches do not:
    evaluation runs in a forked RNG, so training after it draws the same
    numbers with the cache off, cold or warm."""
    trainer = build(data_root, tmp_path / "cache", "CoOp")
    for cache in (None, False, "warm"):  # off, cold (built on first use), warm
        if cache != "warm":
            trainer._feature_cache = cache
        state = torch.get_rng_state()
        evaluate(trainer, "val")
        assert torch.equal(torch.get_rng_state(), state), cache


def test_weights_hash_is_remembered_by_path_size_and_mtime(tmp_path):
    from toolbox.features.identity import MEMO_FILE, file_sha256

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights v1")
    memo = tmp_path / "memo"
    real = file_sha256(str(weights), str(memo))
    with open(memo / MEMO_FILE) as f:
        saved = json.load(f)
    assert saved[str(weights)]["sha256"] == real
    saved[str(weights)]["sha256"] = "remembered"  # the memo is read, the file not hashed again
    with open(memo / MEMO_FILE, "w") as f:
        json.dump(saved, f)
    assert file_sha256(str(weights), str(memo)) == "remembered"
    weights.write_bytes(b"weights v2")  # new size and mtime: hashed again
    assert file_sha256(str(weights), str(memo)) not in ("remembered", real)


def _results(out):
    with open(osp.join(out, "results.json")) as f:
        r = json.load(f)
    return r["overall"], [(t["task"], t["value"]) for t in r["tasks"]], r["per_class"]


@pytest.mark.parametrize("name,extra", [
    ("ZeroshotCLIP", []),
    ("LinearProbeCLIP", ["TRAINER.LINEAR_PROBE.C", "1.0"]),  # val features are still read
    ("ProtoNet", []),  # prototypes from the train split's cached features
    ("CoOp", ["OPTIM.MAX_EPOCH", "2", "TEST.FINAL_MODEL", "best_val"]),
])
def test_train_py_results_identical_cold_warm_disabled(data_root, tmp_path, name, extra):
    def run(tag, *opts):
        out = str(tmp_path / tag)
        proc = run_train("--root", data_root, "--seed", "1", "--trainer", name,
                         "--dataset-config-file", DEMO, "--config-file", TINY[name],
                         "--output-dir", out, "DATASET.NUM_SHOTS", "2",
                         "FEATURE_CACHE.DIR", str(tmp_path / "cache"), *extra, *opts)
        return _results(out), proc.stdout

    off, log_off = run("off", "FEATURE_CACHE.ENABLED", "False")
    cold, log_cold = run("cold")
    warm, log_warm = run("warm")
    assert cold == off and warm == off
    if name == "CoOp":  # the trained weights too: evaluation draws no training random number
        ctx = [torch.load(tmp_path / t / "prompt_learner" / "model.pth.tar-2",
                          weights_only=True)["state_dict"]["ctx"] for t in ("off", "cold", "warm")]
        assert torch.equal(ctx[0], ctx[1]) and torch.equal(ctx[0], ctx[2])
    assert "Image features" not in log_off
    assert counts(log_cold)[0] == 0 and counts(log_cold)[1] > 1500
    assert counts(log_warm) == (counts(log_cold)[1], 0)
    if name == "CoOp":  # best_val: the second epoch's val pass is warm already
        n_val = counts(log_cold, "val")[1]
        assert n_val > 0 and counts(log_cold, "val") == (n_val, n_val)
        assert counts(log_warm, "val") == (2 * n_val, 0)
    if name in ("LinearProbeCLIP", "ProtoNet"):
        assert counts(log_warm, "train")[1] == 0 and counts(log_warm, "val")[1] == 0


# ---- misses ----------------------------------------------------------------------

def test_a_changed_image_misses_only_itself(data_root, tmp_path, capsys):
    trainer = build(data_root, tmp_path / "cache")
    first = evaluate(trainer)
    capsys.readouterr()
    item = trainer.dm.dataset.test[0]
    from PIL import Image

    with Image.open(item.impath) as im:
        changed = im.convert("L").point(lambda v: 255 - v)
    backup = item.impath + ".orig"
    shutil.copy2(item.impath, backup)
    try:
        changed.save(item.impath)
        result = evaluate(trainer)
        assert counts(capsys.readouterr().out) == (539, 1)
        trainer._feature_cache = None
        off = evaluate(trainer)[2][0]
        # the other rows come from the store; the new image's row is its own
        # feature (encoded in a batch of one, so equal up to float rounding)
        assert torch.equal(off[1:], result[2][0][1:])
        assert torch.allclose(off[0], result[2][0][0], rtol=1e-4, atol=1e-4)
        assert not torch.allclose(first[2][0][0], result[2][0][0], rtol=1e-4, atol=1e-4)
    finally:
        os.replace(backup, item.impath)


def test_changed_weights_file_misses(data_root, tmp_path, capsys):
    from trainers.clip_model import clip_state_dict

    weights = tmp_path / "tiny.pt"
    state = clip_state_dict("tiny-vit-digits")
    torch.save(state, weights)
    opts = ["MODEL.BACKBONE.PATH", str(weights), "MODEL.BACKBONE.ACTIVATION", "quick_gelu"]
    base = evaluate(build(data_root, tmp_path / "cache", "ZeroshotCLIP", *opts))
    assert counts(capsys.readouterr().out) == (0, 540)
    evaluate(build(data_root, tmp_path / "cache", "ZeroshotCLIP", *opts))
    assert counts(capsys.readouterr().out) == (540, 0)
    state = {k: v.clone() for k, v in state.items()}
    state["visual.proj"] += 0.01 * torch.randn_like(state["visual.proj"])
    torch.save(state, weights)
    changed = evaluate(build(data_root, tmp_path / "cache", "ZeroshotCLIP", *opts))
    assert counts(capsys.readouterr().out) == (0, 540)
    assert not all(torch.equal(a, b) for a, b in zip(changed[2], base[2]))
    from trainers.backbones import canonical_name

    name = canonical_name("tiny-vit-digits")
    backbones = [d for d in os.listdir(tmp_path / "cache") if d.startswith(name + "-")]
    assert len(backbones) == 2  # one per weights hash


def test_changed_transform_misses(data_root, tmp_path, capsys):
    evaluate(build(data_root, tmp_path / "cache"))
    capsys.readouterr()
    evaluate(build(data_root, tmp_path / "cache", "ZeroshotCLIP",
                   "INPUT.INTERPOLATION", "bilinear"))
    assert counts(capsys.readouterr().out) == (0, 540)
    evaluate(build(data_root, tmp_path / "cache", "ZeroshotCLIP",
                   "INPUT.PIXEL_MEAN", "[0.5, 0.5, 0.5]"))
    assert counts(capsys.readouterr().out) == (0, 540)


def _direct_cache(trainer, directory, precision, device_kind):
    cache = trainer.feature_cache
    return FeatureCache(str(directory), cache.identity, cache.transform, precision, device_kind)


def test_changed_precision_or_device_kind_misses(data_root, tmp_path):
    from trainers.feature_cache import encoder

    trainer = build(data_root, tmp_path / "cache")
    items = trainer.dm.dataset.test[:40]
    names = ["DemoDigit"] * len(items)
    encode = encoder(trainer, items, trainer.dm.tfm_test)
    for precision, kind in [("fp32", "cpu"), ("fp16", "cuda"), ("bf16", "cuda"),
                            ("fp32", "cuda")]:
        cache = _direct_cache(trainer, tmp_path / "direct", precision, kind)
        cache.features(items, "test", names, encode)
        assert cache.stats == {"hits": 0, "computed": 40}, (precision, kind)
        cache.features(items, "test", names, encode)
        assert cache.stats == {"hits": 40, "computed": 40}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp16_and_fp32_features_are_separate_stores(data_root, tmp_path, capsys):
    opts = ["USE_CUDA", "True"]
    evaluate(build(data_root, tmp_path / "cache", "ZeroshotCLIP", *opts,
                   "TRAINER.ZSCLIP.PREC", "fp16"))
    capsys.readouterr()
    evaluate(build(data_root, tmp_path / "cache", "ZeroshotCLIP", *opts,
                   "TRAINER.ZSCLIP.PREC", "fp32"))
    assert counts(capsys.readouterr().out) == (0, 540)


# ---- damage, unwritable folders, full disks ------------------------------------------

def _stores(directory):
    return sorted(osp.join(d, f) for d, _, files in os.walk(directory) for f in files
                  if f.endswith(".feat"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_store_is_reported_once_and_rebuilt(data_root, tmp_path, capsys, damage):
    trainer = build(data_root, tmp_path / "cache")
    first = evaluate(trainer)
    (store,) = _stores(tmp_path / "cache")
    with open(store, "rb") as f:
        blob = bytearray(f.read())
    if damage == "truncate":
        blob = blob[:-100]
    elif damage == "flip":
        blob[-5] ^= 0xFF
    else:
        blob = bytearray(b"not a store at all")
    with open(store, "wb") as f:
        f.write(blob)
    capsys.readouterr()
    trainer._feature_cache = False  # a new run
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = evaluate(trainer)
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and "damaged feature cache file" in msgs[0] and store in msgs[0]
    assert counts(capsys.readouterr().out) == (0, 540)
    assert again[0] == first[0] and all(torch.equal(a, b) for a, b in zip(again[2], first[2]))
    head, feats = read_store(store)  # rebuilt, whole
    assert head["n"] == 540 and feats.shape == (540, 64)


def test_unwritable_folder_warns_once_and_results_are_right(data_root, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    trainer = build(data_root, blocker / "cache")  # cannot be created, even by root
    trainer._feature_cache = None
    off = evaluate(trainer)
    trainer._feature_cache = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = evaluate(trainer, "val")
        run = evaluate(trainer)
        evaluate(trainer)
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and "cannot write the feature cache" in msgs[0], msgs
    assert first[0] is not None
    assert run[0] == off[0] and all(torch.equal(a, b) for a, b in zip(run[2], off[2]))


def test_default_folder_is_beside_the_data_else_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_dir("", str(tmp_path / "data")) == str(tmp_path / "data" / ".feature_cache")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert resolve_dir("", str(blocker / "data")) == str(tmp_path / "xdg" / "clip_feature_cache")
    assert resolve_dir("~/x", "") == osp.expanduser("~/x")


def test_files_follow_the_umask(data_root, tmp_path):
    old = os.umask(0o002)
    try:
        evaluate(build(data_root, tmp_path / "cache"))
    finally:
        os.umask(old)
    (store,) = _stores(tmp_path / "cache")
    assert os.stat(store).st_mode & 0o777 == 0o664


def _limit_file_size(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_leaves_no_partial_file_and_the_run_goes_on(data_root, tmp_path):
    """RLIMIT_FSIZE makes writes past 120 kB fail (EFBIG) as on a full disk:
    the 177 kB store cannot be written; log and results.json can."""
    base = [sys.executable, osp.join(ROOT, "train.py"), "--root", data_root, "--seed", "1",
            "--trainer", "ZeroshotCLIP", "--dataset-config-file", DEMO,
            "--config-file", TINY["ZeroshotCLIP"]]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    full = subprocess.run(base + ["--output-dir", str(tmp_path / "full"), "FEATURE_CACHE.DIR",
                                  str(tmp_path / "cache"), "DATASET.TASKS", "['DemoDigit']"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                          preexec_fn=_limit_file_size(120_000))
    assert full.returncode == 0, full.stderr[-2000:]
    assert full.stderr.count("cannot write the feature cache") == 1, full.stderr
    leftovers = [f for _, _, files in os.walk(tmp_path / "cache") for f in files
                 if f.endswith(".feat") or f.startswith(TMP_PREFIX)]
    assert leftovers == []
    control = subprocess.run(base + ["--output-dir", str(tmp_path / "off"),
                                     "FEATURE_CACHE.ENABLED", "False", "DATASET.TASKS",
                                     "['DemoDigit']"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert control.returncode == 0
    assert _results(tmp_path / "full") == _results(tmp_path / "off")


def test_a_failed_write_keeps_the_old_store(data_root, tmp_path, monkeypatch, capsys):
    """A write error (here: ENOSPC on the second chunk) mid-way through an
    update leaves the previous store untouched and no temp file."""
    import errno

    import toolbox.features.store as store_mod

    trainer = build(data_root, tmp_path / "cache")
    evaluate(trainer)
    (store,) = _stores(tmp_path / "cache")
    before = open(store, "rb").read()
    real = store_mod.atomic_write_bytes

    def failing(path, chunks):
        def gen():
            for i, c in enumerate(chunks):
                if i == 2:
                    raise OSError(errno.ENOSPC, "No space left on device")
                yield c
        return real(path, gen())

    monkeypatch.setattr(store_mod, "atomic_write_bytes", failing)
    trainer2 = build(data_root, tmp_path / "cache", "ZeroshotCLIP", "DATASET.NUM_SHOTS", "4")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer2.cached_features(trainer2.dm.dataset.train_x, "test")  # new images: an update
    assert len(caught) == 1 and "No space left" in str(caught[0].message)
    assert open(store, "rb").read() == before
    assert [f for f in os.listdir(osp.dirname(store)) if f.startswith(TMP_PREFIX)] == []


# ---- concurrency -------------------------------------------------------------------

def test_two_runs_building_one_store_encode_each_image_once(data_root, tmp_path):
    procs, outs = [], []
    for i in range(2):
        out = str(tmp_path / f"run{i}")
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, osp.join(ROOT, "train.py"), "--root", data_root, "--seed", "1",
             "--trainer", "ZeroshotCLIP", "--dataset-config-file", DEMO,
             "--config-file", TINY["ZeroshotCLIP"], "--output-dir", out,
             "FEATURE_CACHE.DIR", str(tmp_path / "cache")],
            cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    logs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-2000:]
        logs.append(stdout)
    encoded = [counts(log)[1] for log in logs]
    n_test = counts(logs[0])[0] + encoded[0]
    assert sorted(encoded) == [0, n_test]  # one run encoded everything, the other nothing
    assert _results(outs[0]) == _results(outs[1])
    for store in _stores(tmp_path / "cache"):
        head, feats = read_store(store)
        assert len(set(p for p, _, _ in head["entries"])) == head["n"] == feats.shape[0]


# ---- tools/cache.py --------------------------------------------------------------------

def _tool(*argv):
    return subprocess.run([sys.executable, osp.join(ROOT, "tools", "cache.py"), *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="2"))


def _tool_here(capsys, *argv):
    """tools/cache.py's main() in this process (list and prune import little; a
    subprocess would mostly time Python's start): (exit code, stdout, stderr)."""
    from tools import cache as tool

    capsys.readouterr()
    try:
        tool.main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out, err)


def test_cache_tool_precompute_list_prune(data_root, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    pre = _tool("precompute", "--root", data_root, "--dataset-config-file", DEMO,
                "--config-file", TINY["CoOp"], "--splits", "test,val",
                "FEATURE_CACHE.DIR", cache)
    assert pre.returncode == 0, pre.stderr[-2000:]
    assert "Encoding images" in pre.stdout + pre.stderr  # the progress bar
    listing = _tool_here(capsys, "list", "--dir", cache)
    assert listing.returncode == 0
    from trainers.backbones import canonical_name

    name = canonical_name("tiny-vit-digits")
    rows = [ln for ln in listing.stdout.splitlines() if ln.startswith(f"| {name} ")]
    assert len(rows) == 6 and "| DemoParity" in listing.stdout and "| 540 " in listing.stdout
    # a CoOp run afterwards finds every test image cached
    proc = run_train("--root", data_root, "--seed", "1", "--trainer", "CoOp",
                     "--dataset-config-file", DEMO, "--config-file", TINY["CoOp"],
                     "--output-dir", str(tmp_path / "run"), "--eval-only",
                     "DATASET.NUM_SHOTS", "2", "FEATURE_CACHE.DIR", cache)
    assert counts(proc.stdout)[1] == 0 and counts(proc.stdout)[0] > 1500
    dry = _tool_here(capsys, "prune", "--dir", cache, "--backbone", name, "--dry-run")
    assert dry.returncode == 0 and "6 store(s)" in dry.stdout and len(_stores(cache)) == 6
    rn50 = _tool_here(capsys, "prune", "--dir", cache, "--backbone", "RN50")
    assert rn50.stdout.startswith("0 store(s)")
    gone = _tool_here(capsys, "prune", "--dir", cache, "--older-than", "0")
    assert gone.returncode == 0 and _stores(cache) == []
    assert [d for d in os.listdir(cache) if not d.endswith(".json")] == []


@pytest.mark.parametrize("argv", [["list"], ["prune", "--dir", "x"],
                                  ["precompute", "--root", "x", "--dataset-config-file", DEMO,
                                   "--splits", "test,everything"],
                                  ["prune", "--dir", "x", "--older-than", "-1"]])
def test_cache_tool_bad_arguments(argv, capsys):
    proc = _tool_here(capsys, *argv)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
