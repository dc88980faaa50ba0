"""The backbone registry and factory: names and aliases, preprocessing from the
backbone, OpenCLIP models through the same prompt code (exact logits), and the
one-line errors for bad backbone inputs."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import ROOT, make_cfg, run_train
from toolbox.engine import build_trainer
from toolbox.errors import UserError
from trainers.backbones import (backbone_preprocess, canonical_name, create_backbone,
                                fill_input_defaults, get_backbone, list_backbones,
                                weights_file_for_cfg)
from trainers.clip_model import TextEncoder, context_init, load_clip, text_tower, tokenize

import datasets  # noqa: F401
import trainers  # noqa: F401

# An OpenAI-class model, an OpenCLIP ViT, an OpenCLIP ResNet, an OpenCLIP
# ConvNeXt (timm tower, text projection as nn.Linear with a bias): all random, small.
FAMILY_MODELS = ["tiny_vit_random", "open_clip:tiny-ViT", "open_clip:tiny-RN",
                 "open_clip:tiny-convnext"]


def test_old_names_are_aliases_of_one_canonical_name():
    assert canonical_name("RN50") == canonical_name("rn50") == "rn50"
    assert canonical_name("ViT-B/16") == "vit_b16"
    assert canonical_name("ViT-L/14@336px") == "vit_l14_336"
    assert canonical_name("tiny-vit-digits") == "tiny_vit"   # what the tiny_vit configs ran
    assert canonical_name("tiny-vit") == "tiny_vit_random"
    assert canonical_name("oc_vit_b32") == "open_clip:ViT-B-32"
    assert get_backbone("ViT-B/32").family == "openai"
    assert "open_clip:ViT-B-32" in list_backbones(family="open_clip")
    assert list_backbones("vit_*", family="openai") == ["vit_b32", "vit_b16", "vit_l14", "vit_l14_336"]
    assert "RN50" in list_backbones("RN*", aliases=True)


def test_unknown_backbone_names_the_closest_match():
    with pytest.raises(UserError) as e:
        canonical_name("vit_b61")
    msg = str(e.value)
    assert "unknown backbone 'vit_b61'" in msg and "closest: 'vit_b16'" in msg
    assert "rn50" in msg and "open_clip:<arch>" in msg and "\n" not in msg


def test_preprocessing_comes_from_the_backbone_unless_the_config_sets_it(demo_root):
    cfg = make_cfg(demo_root, "configs/datasets/demo.yaml", "configs/trainers/CoOp/rn50_ep50.yaml")
    assert cfg.MODEL.BACKBONE.NAME == "rn50"
    assert tuple(cfg.INPUT.SIZE) == (224, 224) and cfg.INPUT.INTERPOLATION == "bicubic"
    assert cfg.INPUT.PIXEL_MEAN == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    cfg = make_cfg(demo_root, "configs/datasets/demo.yaml", "configs/trainers/CoOp/rn50_ep50.yaml",
                   ["MODEL.BACKBONE.NAME", "ViT-L/14@336px", "INPUT.INTERPOLATION", "bilinear"])
    assert cfg.MODEL.BACKBONE.NAME == "vit_l14_336" and tuple(cfg.INPUT.SIZE) == (336, 336)
    assert cfg.INPUT.INTERPOLATION == "bilinear"  # set by the user: kept
    cfg = make_cfg(demo_root, "configs/datasets/demo.yaml", "configs/trainers/CoOp/tiny_vit_ep10.yaml",
                   ["MODEL.BACKBONE.NAME", "open_clip:tiny-RN", "MODEL.BACKBONE.PRETRAINED", "random"])
    assert tuple(cfg.INPUT.SIZE) == (64, 64)
    # an OpenCLIP tag with its own normalisation
    pre = backbone_preprocess("open_clip:ViT-B-16", "datacomp_xl_s13b_b90k")
    assert tuple(pre["mean"]) == (0.48145466, 0.4578275, 0.40821073) and pre["size"] == 224


def test_no_yaml_copies_clip_constants():
    for dirpath, _, files in os.walk(osp.join(ROOT, "configs")):
        for f in files:
            text = open(osp.join(dirpath, f)).read()
            assert "0.48145466" not in text and "PIXEL_STD" not in text, f


def test_weights_file_is_the_file_the_model_is_built_from(demo_root, tmp_path):
    cfg = make_cfg(demo_root, "configs/datasets/demo.yaml", "configs/trainers/CoOp/tiny_vit_ep10.yaml")
    path = weights_file_for_cfg(cfg)
    load_clip(cfg.MODEL.BACKBONE.NAME)
    assert path.endswith("tiny-vit-digits.pt") and osp.isfile(path)
    cfg = make_cfg(demo_root, "configs/datasets/demo.yaml", "configs/trainers/CoOp/tiny_vit_ep10.yaml",
                   ["MODEL.BACKBONE.NAME", "tiny-vit"])
    assert cfg.MODEL.BACKBONE.NAME == "tiny_vit_random" and weights_file_for_cfg(cfg) is None
    cfg = make_cfg(demo_root, "configs/datasets/demo.yaml", "configs/trainers/CoOp/rn50_ep50.yaml",
                   ["MODEL.BACKBONE.PATH", str(tmp_path / "w.pt")])
    assert weights_file_for_cfg(cfg) == str(tmp_path / "w.pt")


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_open_clip_tokenizer_and_text_encoder_match_the_model(name):
    model, _ = create_backbone(name, random_weights=True)
    texts = ["a photo of a cat.", "a much longer prompt about a very small dog on the grass."]
    tok = tokenize(texts)
    if name.startswith("open_clip:"):
        import open_clip

        assert torch.equal(open_clip.get_tokenizer(get_backbone(name).arch)(texts), tok)
    enc = TextEncoder(model)
    with torch.no_grad():
        got = enc(text_tower(model).embed(tok), tok)
        want = model.encode_text(tok)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_coop_logits_with_a_photo_of_a_context_equal_encode_text_and_image(demo_root, name):
    """CoOp's context initialised to the word embeddings of "a photo of a" gives
    the logits of the model's own encode_text("a photo of a <class>.") and
    encode_image, to 1e-5, on both families."""
    cfg = make_cfg(demo_root, "configs/datasets/demo.yaml", "configs/trainers/CoOp/tiny_vit_ep10.yaml",
                   ["--trainer", "CoOp", "--output-dir", str(demo_root) + "/out_" + name[-4:],
                    "DATASET.NUM_SHOTS", "2", "DATASET.TASKS", "['DemoDigit']", "VERBOSE", "False",
                    "MODEL.BACKBONE.NAME", name, "MODEL.BACKBONE.PRETRAINED", "random",
                    "TRAINER.COOP.CTX_INIT", "a photo of a"])
    trainer = build_trainer(cfg)
    m = trainer.clip_model
    names = trainer.dm.dataset.classnames
    images = torch.stack([trainer.dm.test_loader.dataset[i]["img"] for i in range(4)])
    assert images.shape[-1] == cfg.INPUT.SIZE[0]
    trainer.set_model_mode("eval")
    with torch.no_grad():
        got = trainer.model_inference(images)
        text = F.normalize(m.encode_text(tokenize([f"a photo of a {n}." for n in names])), dim=-1)
        img = F.normalize(m.encode_image(images), dim=-1)
        want = m.logit_scale.exp() * img @ text.t()
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_context_init_uses_the_models_own_word_embeddings():
    model, _ = create_backbone("open_clip:tiny-ViT", random_weights=True)
    vectors, prefix = context_init(model, 16, "a photo of a")
    tok = tokenize(["a photo of a"])
    assert prefix == "a photo of a" and vectors.shape == (4, 64)
    assert torch.equal(vectors, model.token_embedding(tok)[0, 1:5])


@pytest.mark.parametrize("arch,what", [("ViT-B-16-SigLIP", "pools with"),
                                       ("nllb-clip-base", "Hugging Face"),
                                       ("coca_ViT-B-32", "CoCa")])
def test_text_towers_unfit_for_prompts_are_refused_in_one_line(arch, what):
    with pytest.raises(UserError) as e:
        create_backbone("open_clip:" + arch, random_weights=True)
    msg = str(e.value)
    assert what in msg and "supported" in msg and "\n" not in msg


def test_open_clip_needs_a_tag_or_a_path_and_offline_says_how(monkeypatch, tmp_path):
    with pytest.raises(UserError, match="needs MODEL.BACKBONE.PRETRAINED .* or MODEL.BACKBONE.PATH"):
        create_backbone("open_clip:ViT-B-32")
    with pytest.raises(UserError, match="unknown MODEL.BACKBONE.PRETRAINED 'nope'.*laion2b"):
        create_backbone("open_clip:ViT-B-32", pretrained="nope")
    monkeypatch.setattr("trainers.backbones.open_clip_cached_file", lambda arch, tag: None)
    with pytest.raises(UserError) as e:
        create_backbone("open_clip:ViT-B-32", pretrained="laion2b_s34b_b79k")
    msg = str(e.value)
    assert "not in open_clip's cache" in msg and "MODEL.BACKBONE.PATH" in msg and "\n" not in msg
    # the download itself failing (no network) gives the same line
    monkeypatch.delenv("CLIP_OFFLINE", raising=False)

    def no_network(cfg, *a, **k):
        raise ConnectionError("no route to host")

    monkeypatch.setattr("open_clip.pretrained.download_pretrained", no_network)
    with pytest.raises(UserError, match="download failed .*ConnectionError.*MODEL.BACKBONE.PATH"):
        create_backbone("open_clip:ViT-B-32", pretrained="laion2b_s34b_b79k")


def test_open_clip_checkpoint_loads_from_path_and_another_arch_is_named(tmp_path):
    ref, _ = create_backbone("open_clip:tiny-ViT", random_weights=True)
    with torch.no_grad():
        ref.logit_scale.fill_(3.0)
    torch.save(ref.state_dict(), tmp_path / "vit.pt")
    loaded, _ = create_backbone("open_clip:tiny-ViT", path=str(tmp_path / "vit.pt"))
    assert loaded.logit_scale.item() == 3.0
    img = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.encode_image(img), ref.encode_image(img))
    other, _ = create_backbone("open_clip:tiny-RN", random_weights=True)
    torch.save(other.state_dict(), tmp_path / "rn.pt")
    with pytest.raises(UserError) as e:
        create_backbone("open_clip:tiny-ViT", path=str(tmp_path / "rn.pt"))
    msg = str(e.value)
    assert "open_clip:tiny-RN" in msg and "not backbone open_clip:tiny-ViT" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("opts,expect", [
    (["MODEL.BACKBONE.NAME", "vit_b61"], "closest: 'vit_b16'"),
    (["MODEL.BACKBONE.NAME", "open_clip:ViT-B-32"], "needs MODEL.BACKBONE.PRETRAINED"),
])
def test_bad_backbone_inputs_exit_2_and_write_nothing(demo_root, tmp_path, opts, expect):
    out = tmp_path / "out"
    proc = run_train("--root", demo_root, "--trainer", "CoOp", "--output-dir", out,
                     "--dataset-config-file", "configs/datasets/demo.yaml",
                     "--config-file", "configs/trainers/CoOp/tiny_vit_ep10.yaml", *opts,
                     check=False, env={"CLIP_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expect in err[0], proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_backbones_tool_lists_names_and_local_weights(tmp_path):
    proc = subprocess.run([sys.executable, osp.join(ROOT, "tools/backbones.py"), "--json",
                           "--filter", "*vit*"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, CLIP_CACHE=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["vit_b16"]["aliases"] == ["ViT-B/16"] and rows["vit_b16"]["weights"] == "missing"
    assert rows["tiny_vit_random"]["weights"] == "built in"
    assert "open_clip:ViT-B-32" in rows
