"""No silent wrong result, fail fast (issue 22): each case ends in one
``error: ...`` line (exit 2) naming the problem and the fix, or, where the
input is legitimate, a correct result with a warning. In-process where the
case allows it."""
import json
import os
import os.path as osp
import shutil
import warnings

import numpy as np
import pytest

from tests.conftest import make_cfg
from toolbox.errors import UserError

import datasets  # noqa: F401
import trainers  # noqa: F401

pytestmark = pytest.mark.fast

DEMO = "configs/datasets/demo.yaml"
COOP = "configs/trainers/CoOp/tiny_vit_ep10.yaml"


# ---- --resume into a folder whose checkpoint pointer names a missing file -----------------

def test_resume_with_a_pointer_to_a_missing_checkpoint_is_one_line(demo_root, tmp_path):
    from toolbox.run_folder import check_run_folder

    out = tmp_path / "run"
    (out / "prompt_learner").mkdir(parents=True)
    (out / "prompt_learner" / "checkpoint").write_text("model.pth.tar-3\n")
    cfg = make_cfg(demo_root, DEMO, COOP, ["--trainer", "CoOp", "--output-dir", str(out),
                                           "--resume", str(out)])
    with pytest.raises(UserError) as e:
        check_run_folder(cfg, bare_resume=False)
    msg = str(e.value)
    assert "model.pth.tar-3" in msg and "missing" in msg and "\n" not in msg
    assert "delete the pointer" in msg
    # an older checkpoint that is still there is named as the way out
    (out / "prompt_learner" / "model.pth.tar-2").write_bytes(b"")
    with pytest.raises(UserError, match=r"write the name of one that exists \(model.pth.tar-2\)"):
        check_run_folder(cfg, bare_resume=True)


# ---- a damaged weights_hashes.json is rebuilt, never a crash after training ---------------

@pytest.mark.parametrize("content", ["[1, 2, 3]", "\"text\"", "{not json", "7"])
def test_damaged_weights_memo_is_treated_as_absent(tmp_path, content):
    import hashlib

    from toolbox.features.identity import MEMO_FILE, file_sha256

    weights = tmp_path / "w.pt"
    weights.write_bytes(b"some weights")
    (tmp_path / MEMO_FILE).write_text(content)
    assert file_sha256(str(weights), str(tmp_path)) == hashlib.sha256(b"some weights").hexdigest()
    with open(tmp_path / MEMO_FILE) as f:  # rebuilt: the hash is remembered again
        assert isinstance(json.load(f), dict)


# ---- tools/cache.py prune on a cache it cannot write ---------------------------------------

def _one_store(cache):
    from toolbox.features import FeatureCache

    fc = FeatureCache(str(cache), {"name": "tiny_vit", "weights_sha256": "ab" * 32,
                                   "weights_file": None}, "tfm", "fp32", "cpu")
    return fc, fc.store_path("DemoDigit", "test")


def _items(tmp_path, n=3):
    from toolbox.data.datasets import Datum

    items = []
    for i in range(n):
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(bytes([i]) * 10)
        # same size and time: only the path tells the rows apart
        os.utime(p, ns=(1_700_000_000_000_000_000,) * 2)
        items.append(Datum(impath=str(p), label=i))
    return items


def _encode(items):
    """encode() for FeatureCache.features: row i is [index of the image, 0, 0, 0]."""
    calls = []

    def encode(positions):
        calls.append(list(positions))
        yield positions, np.array([[int(osp.basename(items[i].impath)[0]), 0, 0, 0]
                                   for i in positions], np.float32)
    return encode, calls


def test_prune_on_a_read_only_cache_is_one_line(tmp_path, monkeypatch, capsys):
    import tools.cache as cache_tool

    fc, path = _one_store(tmp_path / "cache")
    items = _items(tmp_path)
    fc.features(items, "test", ["DemoDigit"] * 3, _encode(items)[0])
    assert osp.isfile(path)
    # root ignores permission bits: a read-only file system is what refuses here
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode & os.W_OK
                        else real_access(p, mode))
    with pytest.raises(SystemExit) as e:
        cache_tool.main(["prune", "--dir", str(tmp_path / "cache"), "--all"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot remove feature stores in ")
    assert "read-only" in err and osp.isfile(path)  # refused before removing anything
    # a removal that fails anyway (a race, an ACL): the same one line
    monkeypatch.setattr(os, "access", real_access)

    def refuse(p, *a, **k):
        raise OSError(30, "Read-only file system", p)
    monkeypatch.setattr(os, "remove", refuse)
    with pytest.raises(SystemExit) as e:
        cache_tool.main(["prune", "--dir", str(tmp_path / "cache"), "--all"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "Read-only file system" in err


# ---- the feature cache checks each store's header against the request ---------------------

def test_store_copied_from_another_backbone_is_not_served(tmp_path):
    from toolbox.features import FeatureCache

    items = _items(tmp_path)
    fc, path = _one_store(tmp_path / "cache")
    encode, _ = _encode(items)
    first = fc.features(items, "test", ["DemoDigit"] * 3, encode)
    other = FeatureCache(fc.dir, dict(fc.identity, name="tiny_rn", weights_sha256="cd" * 32),
                         "tfm", "fp32", "cpu")
    target = other.store_path("DemoDigit", "test")
    os.makedirs(osp.dirname(target))
    shutil.copy(path, target)  # another backbone's features under this one's folder

    def encode_other(positions):
        yield positions, -np.ones((len(positions), 4), np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feats = other.features(items, "test", ["DemoDigit"] * 3, encode_other)
    assert (feats == -1).all() and (first >= 0).all()
    assert any("holds features of another backbone (tiny_vit)" in str(w.message)
               for w in caught)
    # rebuilt under its own header: served from now on
    assert (other.features(items, "test", ["DemoDigit"] * 3, encode_other) == -1).all()
    assert other.stats["hits"] == 3


def test_store_whose_rows_were_moved_is_rebuilt(tmp_path):
    items = _items(tmp_path)
    fc, path = _one_store(tmp_path / "cache")
    encode, calls = _encode(items)
    fc.features(items, "test", ["DemoDigit"] * 3, encode)
    with open(path, "rb") as f:
        blob = f.read()
    a, b = (f'"{items[i].impath}"'.encode() for i in (0, 1))
    assert len(a) == len(b)  # paths of the same length: the file keeps its size
    mark = b"<<swap>>"
    moved = blob.replace(a, mark).replace(b, a).replace(mark, b)
    assert len(moved) == len(blob) and moved != blob
    with open(path, "wb") as f:
        f.write(moved)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feats = fc.features(items, "test", ["DemoDigit"] * 3, encode)
    assert feats[:, 0].tolist() == [0, 1, 2]  # each image its own row, recomputed
    assert len(calls) == 2 and calls[1] == [0, 1, 2]
    assert any("header checksum mismatch" in str(w.message) for w in caught)


def test_next_writer_removes_temp_stores_of_killed_writers_only(tmp_path):
    from filelock import FileLock

    from toolbox.features.store import TMP_PREFIX

    items = _items(tmp_path)
    fc, path = _one_store(tmp_path / "cache")
    os.makedirs(osp.dirname(path))
    dead = osp.join(osp.dirname(path), TMP_PREFIX + osp.basename(path) + "-abc123")
    other_store = osp.join(osp.dirname(path), TMP_PREFIX + "val-x.feat-def456")
    for p in (dead, other_store):
        with open(p, "wb") as f:
            f.write(b"partial")
    fc.features(items, "test", ["DemoDigit"] * 3, _encode(items)[0])
    assert not osp.exists(dead)  # its writer is gone: the lock was free
    assert osp.exists(other_store)  # another store's (its writer may be alive)
    # a live writer holds the store's lock: its temp file survives a reader's pass
    live = osp.join(osp.dirname(path), TMP_PREFIX + osp.basename(path) + "-live")
    with open(live, "wb") as f:
        f.write(b"partial")
    with FileLock(path + ".lock"):
        fc.features(items, "test", ["DemoDigit"] * 3, _encode(items)[0])  # all hits, no write
    assert osp.exists(live)


# ---- a dataset with its own read_items: a renamed class is not hidden by the saved split ---

def test_renamed_class_of_a_read_items_dataset_is_refused(tmp_path):
    from toolbox.data.datasets import DATASET_REGISTRY, Datum, build_dataset
    from toolbox.data.datasets.task_dataset import TaskDataset

    names = {"a": "apple", "b": "banana"}

    @DATASET_REGISTRY.register(force=True)
    class RenamedFruit(TaskDataset):
        """$DATA/renamed_fruit/<a|b>/*.png, class names from a table in the code."""
        dataset_dir = "renamed_fruit"

        def read_items(self):
            return [Datum(impath=osp.join(self.image_dir, f, n), label=i, classname=names[f])
                    for i, f in enumerate(sorted(names))
                    for n in sorted(os.listdir(osp.join(self.image_dir, f)))]

    for f in names:
        os.makedirs(tmp_path / "renamed_fruit" / f)
        for j in range(5):
            (tmp_path / "renamed_fruit" / f / f"{j}.png").write_bytes(b"x")
    cfg = make_cfg(tmp_path, None, None, ["--seed", "1", "DATASET.NAME", "RenamedFruit"])
    assert build_dataset(cfg).classnames == ["apple", "banana"]
    split = tmp_path / "renamed_fruit" / "split_RenamedFruit.json"
    assert split.is_file()
    assert build_dataset(cfg).classnames == ["apple", "banana"]  # unchanged code: no fuss
    names["b"] = "plantain"  # the code now names class 1 differently
    with pytest.raises(UserError) as e:
        build_dataset(cfg)
    msg = str(e.value)
    assert f"delete {split}" in msg and "'banana' in the file, 'plantain' in the code" in msg
    split.unlink()
    assert build_dataset(cfg).classnames == ["apple", "plantain"]


# ---- results.json: NaN refused by reader and writer; all-images runs are not zero-shot ------

def _results_tree(tmp_path):
    from tests.test_results_tools import write_run

    root = str(tmp_path / "output")
    write_run(root, "CoOpMT", "tiny_vit_ep10_4shots", "task", 1, [70.0, 55.0, 60.0])
    write_run(root, "ZeroshotCLIP", "tiny_vit_0shots", "task", 1, [88.0, 45.0, 35.0])
    return root


def test_results_with_nan_overall_is_one_line_for_every_reader(tmp_path, capsys):
    from tools import compare, parse_results

    root = _results_tree(tmp_path)
    path = osp.join(root, "demo", "CoOpMT", "tiny_vit_ep10_4shots", "task", "seed1",
                    "results.json")
    with open(path) as f:
        data = json.load(f)
    data["overall"] = float("nan")
    with open(path, "w") as f:
        json.dump(data, f)  # json writes NaN, as an older train.py could
    for main, argv in ((parse_results.main, [root]),
                       (compare.main, ["--root", root, "--dataset", "demo", "--shots", "4"])):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: {path} holds a NaN") and "overall" in err


def test_nan_accuracy_is_a_user_error_and_no_results_json(demo_root, tmp_path):
    from toolbox.engine import build_trainer

    out = tmp_path / "zs"
    cfg = make_cfg(demo_root, DEMO, "configs/trainers/ZeroshotCLIP/tiny_vit.yaml",
                   ["--trainer", "ZeroshotCLIP", "--output-dir", str(out), "--seed", "1",
                    "DATASET.TASKS", "['DemoDigit']", "FEATURE_CACHE.ENABLED", "False"])
    trainer = build_trainer(cfg)
    trainer.text = trainer.text * float("nan")  # what a diverged model gives
    with pytest.raises(UserError) as e:
        trainer.test()
    msg = str(e.value)
    assert "540 of 540 test outputs are NaN, task(s) DemoDigit" in msg and "OPTIM.LR" in msg
    assert "\n" not in msg
    assert not (out / "results.json").exists()


def test_all_images_run_is_labelled_all_not_zero_shot(tmp_path, capsys):
    from tests.test_results_tools import write_run
    from tools import compare, parse_results
    from toolbox.run_folder import ALL_IMAGES, results_shots

    assert results_shots(0, zero_shot=False) == ALL_IMAGES == -1
    assert results_shots(0, zero_shot=True) == 0 and results_shots(4, zero_shot=False) == 4
    root = _results_tree(tmp_path)
    # a CoOpMT run on every training image, in the folder a grid names NUM_SHOTS 0 by
    write_run(root, "CoOpMT", "tiny_vit_ep10_0shots", "task", 1, [99.0, 99.0, 99.0])
    path = osp.join(root, "demo", "CoOpMT", "tiny_vit_ep10_0shots", "task", "seed1",
                    "results.json")
    with open(path) as f:
        data = json.load(f)
    data["shots"] = -1
    with open(path, "w") as f:
        json.dump(data, f)
    methods = compare.collect(root, "demo", "tiny_vit")
    four = compare.tables(methods, [4])[4]
    # the 4-shot table: CoOp-CA's 4-shot runs and zero-shot CLIP, never the all-images run
    overall = dict(zip(four[0], four[1][-1]))
    assert overall["CoOp-CA"] == "61.67" and overall["ZS-CLIP"] == "56.00"
    compare.main(["--root", root, "--dataset", "demo", "--shots", "4", "all"])
    out = capsys.readouterr().out
    assert "## all shots" in out and "99.00" in out.split("## all shots")[1]
    assert "99.00" not in out.split("## all shots")[0]
    parse_results.main([root])
    out = capsys.readouterr().out
    assert "tiny_vit_ep10_0shots" + os.sep + "task (seeds 1; all training images)" in out


# ---- the old '# suite' marker is no longer a suite: said wherever the question is answered -

def test_old_suite_marker_warns_and_is_not_a_suite(tmp_path):
    from toolbox.data.suite import is_suite, warn_suite_flag

    old = tmp_path / "old.yaml"
    old.write_text("# suite: Demo, three digit tasks\nDATASET:\n  NAME: \"Demo\"\n")
    new = tmp_path / "new.yaml"
    new.write_text("# Demo\nDATASET:\n  NAME: \"Demo\"\n  SUITE: True  # several tasks\n")
    single = tmp_path / "single.yaml"
    single.write_text("# one task\nDATASET:\n  NAME: \"DemoDigit\"\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert is_suite(str(old)) is False
        assert is_suite(str(new)) is True and is_suite(str(single)) is False
        assert is_suite(str(tmp_path / "none.yaml")) is False
    assert [str(w.message) for w in caught] == [
        f"{old} starts with the old '# suite' marker, which no longer makes it a suite (it gets "
        "the single-dataset schedule): add DATASET.SUITE True to it"]

    def warned(cfg, path):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn_suite_flag(cfg, path)
        return [str(w.message) for w in caught]
    # train.py: a multi-task dataset without the key, run as a whole, is warned about
    cfg = make_cfg(tmp_path, str(old), None)
    assert len(warned(cfg, str(old))) == 1 and "old '# suite' marker" in warned(cfg, str(old))[0]
    plain = tmp_path / "plain.yaml"
    plain.write_text("DATASET:\n  NAME: \"Demo\"\n")
    msgs = warned(make_cfg(tmp_path, str(plain), None), str(plain))
    assert msgs == [f"dataset Demo is a multi-task suite but DATASET.SUITE is not True, so "
                    f"scripts give it the single-dataset schedule: add DATASET.SUITE True to "
                    f"{plain}"]
    assert warned(make_cfg(tmp_path, str(new), None), str(new)) == []
    assert warned(make_cfg(tmp_path, str(single), None), str(single)) == []
    assert warned(make_cfg(tmp_path, str(plain), None, ["DATASET.TASKS", "['DemoDigit']"]),
                  str(plain)) == []


# ---- SoftCPT says what text it feeds its meta network for each task -------------------------

def test_softcpt_logs_each_tasks_text(demo_root, tmp_path, capsys):
    from toolbox.engine import build_trainer

    cfg = make_cfg(demo_root, DEMO, "configs/trainers/SoftCPT/tiny_vit_ep10.yaml",
                   ["--trainer", "SoftCPT", "--output-dir", str(tmp_path / "o"), "--seed", "1",
                    "DATASET.NUM_SHOTS", "1", "FEATURE_CACHE.ENABLED", "False"])
    trainer = build_trainer(cfg)
    out = capsys.readouterr().out
    assert "SoftCPT task texts (TRAINER.SOFTCPT.TASK_INPUT name;" in out
    from trainers.softcpt import task_text
    for t in trainer.tasks:
        assert f'  {t.name}: "{task_text(t, "name")}"' in out
    assert '  DemoDigit: "demo digit"' in out


# ---- a plain state dict whose architecture is registered with both activations -------------

def test_open_clip_tiny_vit_weights_are_not_loaded_as_tiny_vit(demo_root, tmp_path):
    import torch

    from trainers.backbones import create_backbone
    from trainers.clip_model import load_clip_from_cfg, tokenize

    oc, _ = create_backbone("open_clip:tiny-ViT", random_weights=True)  # GELU
    torch.save(oc.state_dict(), tmp_path / "oc.pt")

    def cfg(*opts):
        return make_cfg(demo_root, DEMO, COOP, ["MODEL.BACKBONE.PATH", str(tmp_path / "oc.pt"),
                                                *opts])
    # the tiny config names tiny_vit (QuickGELU): refused, both ways out named
    with pytest.raises(UserError) as e:
        load_clip_from_cfg(cfg())
    msg = str(e.value)
    assert "registered as tiny_vit (quick_gelu) and open_clip:tiny-ViT (gelu)" in msg
    assert "MODEL.BACKBONE.ACTIVATION gelu with MODEL.BACKBONE.NAME open_clip:tiny-ViT" in msg
    with pytest.raises(UserError, match="ACTIVATION gelu does not fit backbone tiny_vit, which "
                                        "runs quick_gelu; load these weights as "
                                        "open_clip:tiny-ViT"):
        load_clip_from_cfg(cfg("MODEL.BACKBONE.ACTIVATION", "gelu"))
    with pytest.raises(UserError, match="MODEL.BACKBONE.ACTIVATION must be one of"):
        cfg("MODEL.BACKBONE.ACTIVATION", "relu")
    # loaded as what it is: the OpenCLIP model's own features, under its own name
    good = cfg("MODEL.BACKBONE.NAME", "open_clip:tiny-ViT", "MODEL.BACKBONE.ACTIVATION", "gelu")
    assert good.MODEL.BACKBONE.NAME == "open_clip:tiny-ViT"
    model = load_clip_from_cfg(good)
    quick = load_clip_from_cfg(cfg("MODEL.BACKBONE.ACTIVATION", "quick_gelu"))  # as stated
    img, tok = torch.randn(2, 3, 32, 32), tokenize(["a photo of the digit one.", "two"])
    with torch.no_grad():
        assert torch.allclose(model.encode_image(img), oc.encode_image(img), atol=1e-6)
        assert torch.allclose(model.encode_text(tok), oc.encode_text(tok), atol=1e-6)
        # what the silent load gave: other features under tiny_vit's name
        assert (quick.encode_image(img) - oc.encode_image(img)).abs().max() > 1e-3


def test_run_header_says_all_images_or_zero_shot(demo_root):
    import train

    def header(trainer, config, shots):
        cfg = make_cfg(demo_root, DEMO, config, ["--trainer", trainer,
                                                  "DATASET.NUM_SHOTS", str(shots)])
        return train.run_header(cfg, train.get_parser().parse_args([])).split(" | ")[2]
    assert header("CoOp", COOP, 0) == "all training images (results.json: shots -1)"
    assert header("CoOp", COOP, 4) == "4 shots"
    assert header("ZeroshotCLIP", "configs/trainers/ZeroshotCLIP/tiny_vit.yaml", 0) == \
        "0 shots (zero-shot)"
