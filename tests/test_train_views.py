"""FEATURE_CACHE.TRAIN_VIEWS: training on N cached augmented views per image.

Views are the run's own training transform under an RNG seeded per (seed,
image, view), encoded once and kept in the feature cache; each epoch draws
one view per image from an RNG seeded per (seed, epoch). A run resumed from
a checkpoint ends bit-identical to the uninterrupted one; TRAIN_VIEWS 0
trains on images exactly as before (same config digest too)."""
import os.path as osp
import shutil
import warnings

import pytest
import torch
from PIL import Image

from tests.conftest import make_cfg, run_train
from toolbox.config import config_digest
from toolbox.engine import build_trainer
from toolbox.errors import UserError
from toolbox.utils import set_random_seed
from trainers.feature_cache import (VIEWS_VERSION, derived_seed, image_key, train_view_features,
                                    view_choice)

import datasets  # noqa: F401
import trainers  # noqa: F401

DEMO = "configs/datasets/demo.yaml"
COOP = "configs/trainers/CoOp/tiny_vit_ep10.yaml"
# random crops and flips, so that views of one image differ
AUGMENT = ["INPUT.TRANSFORMS", "['random_resized_crop', 'random_flip', 'normalize']"]


def build(root, cache, *opts, trainer="CoOp", config=COOP):
    cfg = make_cfg(root, DEMO, config,
                   ["--trainer", trainer, "--seed", "1",
                    "--output-dir", osp.join(str(cache), "out"),
                    "DATASET.NUM_SHOTS", "2", "DATASET.TASKS", "['DemoDigit']", "VERBOSE", "False",
                    "TEST.NO_TEST", "True", "FEATURE_CACHE.DIR", str(cache), *AUGMENT, *opts])
    set_random_seed(1)
    return build_trainer(cfg)


def test_views_are_seeded_training_transforms_of_each_image(demo_root, tmp_path):
    trainer = build(demo_root, tmp_path / "cache", "FEATURE_CACHE.TRAIN_VIEWS", "2")
    items = trainer.train_loader_x.dataset.data_source
    rng = torch.get_rng_state()
    views = train_view_features(trainer, items, 2)
    assert torch.equal(torch.get_rng_state(), rng)  # the run's own random numbers untouched
    assert views.shape == (2, len(items), 64)
    assert not torch.allclose(views[0], views[1], atol=1e-3)  # two different augmentations
    # view v of an image is the training transform under the RNG seeded by (seed, image, v)
    for i in (0, len(items) - 1):
        for v in (0, 1):
            torch.manual_seed(derived_seed(VIEWS_VERSION, 1, image_key(items[i].impath, demo_root),
                                           v))
            with Image.open(items[i].impath) as im:
                img = trainer.dm.tfm_train(im.convert("RGB"))
            expected = trainer.encode_image(img[None])[0]
            assert torch.allclose(views[v, i], expected, atol=1e-5)
    # a second run reads them back from the cache, identical to the bit
    again = build(demo_root, tmp_path / "cache", "FEATURE_CACHE.TRAIN_VIEWS", "3")
    more = train_view_features(again, items, 3)
    assert torch.equal(more[:2], views)
    # another seed draws other views
    other = build(demo_root, tmp_path / "cache", "FEATURE_CACHE.TRAIN_VIEWS", "2", "SEED", "2")
    theirs = train_view_features(other, items, 2)
    assert not torch.allclose(theirs, views, atol=1e-3)


def test_each_epoch_draws_one_view_per_image_from_seed_and_epoch():
    a = [view_choice(1, e, 1000, 4) for e in range(3)]
    b = [view_choice(1, e, 1000, 4) for e in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], view_choice(2, 0, 1000, 4))
    assert set(a[0].tolist()) == {0, 1, 2, 3}


def _epoch(trainer):
    trainer.epoch, trainer.max_epoch = 0, 1
    set_random_seed(5)
    trainer.run_epoch()
    return trainer.prompt_learner.ctx.detach().clone()


def test_one_view_of_a_deterministic_transform_trains_like_the_images(demo_root, tmp_path,
                                                                       monkeypatch):
    """The demo's training transform has no random step: one view is the image's
    own feature, so an epoch on views takes the steps an epoch on images takes
    (up to float rounding of other batch shapes); the view epoch decodes no image."""
    opts = ["INPUT.TRANSFORMS", "['normalize']", "OPTIM.LR", "0.01", "OPTIM.WARMUP_EPOCH", "0"]
    images = build(demo_root, tmp_path / "a", *opts)
    start = images.prompt_learner.ctx.detach().clone()
    on_images = _epoch(images)
    viewed = build(demo_root, tmp_path / "b", *opts, "FEATURE_CACHE.TRAIN_VIEWS", "1")
    viewed._train_views = train_view_features(viewed, viewed.train_loader_x.dataset.data_source,
                                              1)
    import toolbox.data.data_manager as dm

    def no_image(path):
        raise AssertionError(f"{path} decoded in an epoch on views")

    monkeypatch.setattr(dm, "read_image", no_image)
    on_views = _epoch(viewed)
    assert not torch.allclose(on_images, start, atol=1e-4)  # it trained
    assert torch.allclose(on_views, on_images, atol=1e-5)


def test_zero_views_train_on_images_with_the_old_digest(demo_root, tmp_path, monkeypatch):
    trainer = build(demo_root, tmp_path / "cache")
    cfg = trainer.cfg.clone()
    cfg.defrost()
    del cfg.FEATURE_CACHE["TRAIN_VIEWS"]  # a config from before the key existed
    assert config_digest(cfg) == config_digest(trainer.cfg)
    cfg.FEATURE_CACHE.TRAIN_VIEWS = 2
    assert config_digest(cfg) != config_digest(trainer.cfg)
    import toolbox.data.data_manager as dm

    read = []
    real = dm.read_image
    monkeypatch.setattr(dm, "read_image", lambda path: read.append(path) or real(path))
    _epoch(trainer)
    # 20 images in batches of 8, the incomplete last batch dropped
    assert len(trainer.train_loader_x.dataset.data_source) == 20 and len(read) == 16
    assert trainer._train_views is None


def test_resumed_run_with_views_ends_bit_identical(demo_root, tmp_path):
    """Stopped after epoch 1 (checkpoint pointer set back) and resumed with
    --resume: the last epoch's context equals the uninterrupted run's. The
    resumed process has an empty cache folder: it draws and encodes the same
    views again."""

    def args(out, cache):
        return ["--root", demo_root, "--seed", "1", "--trainer", "CoOp",
                "--dataset-config-file", DEMO, "--config-file", COOP, "--output-dir", out,
                "DATASET.NUM_SHOTS", "2", "DATASET.TASKS", "['DemoDigit']", "OPTIM.MAX_EPOCH",
                "3", "OPTIM.LR", "0.01", "TRAIN.CHECKPOINT_FREQ", "1", "TRAIN.CHECKPOINT_KEEP",
                "0", "TEST.NO_TEST", "True",
                "FEATURE_CACHE.DIR", cache, "FEATURE_CACHE.TRAIN_VIEWS", "3", *AUGMENT]

    full = tmp_path / "full"
    first = run_train(*args(str(full), tmp_path / "cache"))
    assert "Training view 3/3: 0 image features from the cache, 20 encoded" in first.stdout
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    (resumed / "prompt_learner" / "checkpoint").write_text("model.pth.tar-1\n")
    for epoch in (2, 3):
        (resumed / "prompt_learner" / f"model.pth.tar-{epoch}").unlink()
    again = run_train("--resume", *args(str(resumed), tmp_path / "cache2"))
    assert "resuming at epoch 2" in again.stdout
    assert "Training view 3/3: 0 image features from the cache, 20 encoded" in again.stdout
    ctx = [torch.load(d / "prompt_learner" / "model.pth.tar-3", weights_only=True)
           ["state_dict"]["ctx"] for d in (full, resumed)]
    assert torch.equal(ctx[0], ctx[1])
    first_epoch = torch.load(full / "prompt_learner" / "model.pth.tar-1",
                             weights_only=True)["state_dict"]["ctx"]
    assert not torch.equal(first_epoch, ctx[0])


def test_views_without_a_writable_cache_are_computed_for_the_run(demo_root, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cached = build(demo_root, tmp_path / "cache", "FEATURE_CACHE.TRAIN_VIEWS", "2")
    items = cached.train_loader_x.dataset.data_source
    expected = train_view_features(cached, items, 2)
    off = build(demo_root, tmp_path / "cache", "FEATURE_CACHE.TRAIN_VIEWS", "2",
                "FEATURE_CACHE.ENABLED", "False")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cache, nothing to warn about
        views = train_view_features(off, items, 2)
    assert torch.allclose(views, expected, atol=1e-6)
    unwritable = build(demo_root, tmp_path / "cache", "FEATURE_CACHE.TRAIN_VIEWS", "2",
                       "FEATURE_CACHE.DIR", str(blocker / "x"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        views = train_view_features(unwritable, items, 2)
    assert len(caught) == 1 and "cannot write the feature cache" in str(caught[0].message)
    assert torch.allclose(views, expected, atol=1e-6)


@pytest.mark.parametrize("opts,message", [
    (["FEATURE_CACHE.TRAIN_VIEWS", "-1"], "FEATURE_CACHE.TRAIN_VIEWS must be 0"),
    (["FEATURE_CACHE.TRAIN_VIEWS", "2", "SEED", "-1"], "needs a fixed seed"),
])
def test_bad_train_views_settings_are_one_line_errors(demo_root, tmp_path, opts, message):
    with pytest.raises(UserError, match=message):
        build(demo_root, tmp_path / "cache", *opts)


def test_views_have_no_effect_on_trainers_that_train_nothing(demo_root, tmp_path, capsys):
    build(demo_root, tmp_path / "cache", "FEATURE_CACHE.TRAIN_VIEWS", "2",
          trainer="ZeroshotCLIP", config="configs/trainers/ZeroshotCLIP/tiny_vit.yaml")
    assert "FEATURE_CACHE.TRAIN_VIEWS has no effect on ZeroshotCLIP" in capsys.readouterr().out


def test_a_trainer_reading_images_itself_refuses_views(demo_root, tmp_path):
    from toolbox.engine import TRAINER_REGISTRY
    from trainers.coop import CoOp

    class ImagesOnly(CoOp):  # a forward_train that does not take features
        def forward_train(self, image, label, task):
            return super().forward_train(image, label, task)

    TRAINER_REGISTRY._obj_map["ImagesOnlyCoOp"] = ImagesOnly
    try:
        with pytest.raises(UserError, match="trains on images itself"):
            build(demo_root, tmp_path / "cache", "FEATURE_CACHE.TRAIN_VIEWS", "2",
                  trainer="ImagesOnlyCoOp")
    finally:
        del TRAINER_REGISTRY._obj_map["ImagesOnlyCoOp"]
