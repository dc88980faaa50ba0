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


def test_register_a_backbone_with_aliases_and_refuse_a_taken_name():
    from trainers import backbones as bb

    entry = bb.Backbone("my_tiny", "tiny", "tiny-vit", ("My-Tiny",), "a test entry",
                        dict(bb.get_backbone("tiny_vit_random").spec))
    try:
        assert bb.register_backbone(entry) is entry
        assert canonical_name("My-Tiny") == "my_tiny" and get_backbone("My-Tiny") is entry
        assert list_backbones("my*", aliases=True) == ["My-Tiny", "my_tiny"]
        assert backbone_preprocess("My-Tiny")["size"] == 32
        with pytest.raises(ValueError, match="'RN50' is already taken by 'rn50'"):
            bb.register_backbone(bb.Backbone("other", "tiny", "tiny-vit", ("RN50",)))
        assert "other" not in list_backbones()
    finally:
        bb._REGISTRY.pop("my_tiny", None)
        bb._ALIASES.pop("My-Tiny", None)


def test_unknown_backbone_names_the_closest_match():
    with pytest.raises(UserError) as e:
        canonical_name("vit_b61")
    msg = str(e.value)
    assert "unknown backbone 'vit_b61'" in msg and "closest: 'vit_b16'" in msg
    assert "rn50" in msg and "open_clip:<arch>" in msg and "\n" not in msg


def test_preprocessing_comes_from_the_backbone_unless_the_config_sets_it(demo_root):
    cfg = make_cfg(demo_root, "configs/datasets/demo.yaml", "configs/trainers/CoOp/rn50_ep50.yaml")
    # clip's spelling (what upstream trainers look up in clip._MODELS); canonical elsewhere
    assert cfg.MODEL.BACKBONE.NAME == "RN50" and canonical_name(cfg) == "rn50"
    assert tuple(cfg.INPUT.SIZE) == (224, 224) and cfg.INPUT.INTERPOLATION == "bicubic"
    assert cfg.INPUT.PIXEL_MEAN == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    cfg = make_cfg(demo_root, "configs/datasets/demo.yaml", "configs/trainers/CoOp/rn50_ep50.yaml",
                   ["MODEL.BACKBONE.NAME", "ViT-L/14@336px", "INPUT.INTERPOLATION", "bilinear"])
    assert cfg.MODEL.BACKBONE.NAME == "ViT-L/14@336px" and canonical_name(cfg) == "vit_l14_336"
    assert tuple(cfg.INPUT.SIZE) == (336, 336)
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
    loaded, _ = create_backbone("open_clip:tiny-ViT", path=str(tmp_path / "vit.pt"),
                                activation="gelu")
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


@pytest.fixture(scope="module")
def other_arch_checkpoints(tmp_path_factory):
    """Random checkpoints of the OpenCLIP tiny ResNet and the OpenAI-class tiny ResNet."""
    folder = tmp_path_factory.mktemp("ckpt")
    files = {}
    for name in ("open_clip:tiny-RN", "tiny_rn_random"):
        model, _ = create_backbone(name, random_weights=True)
        files[name] = str(folder / (name.replace(":", "_") + ".pt"))
        torch.save(model.state_dict(), files[name])
    return files


# (backbone options, substrings of the one error line); {oc_rn} / {rn}: the checkpoints above
BAD_BACKBONES = [
    (["MODEL.BACKBONE.NAME", "vit_b61"], ["unknown backbone 'vit_b61'", "closest: 'vit_b16'",
                                          "registered: rn50"]),
    (["MODEL.BACKBONE.NAME", "open_clip:ViT-B-32"],
     ["needs MODEL.BACKBONE.PRETRAINED <tag>", "laion2b_s34b_b79k", "or MODEL.BACKBONE.PATH"]),
    (["MODEL.BACKBONE.NAME", "open_clip:tiny-ViT", "MODEL.BACKBONE.PATH", "{oc_rn}"],
     ["holds the architecture of open_clip:tiny-RN, not backbone open_clip:tiny-ViT"]),
    (["MODEL.BACKBONE.NAME", "tiny_vit", "MODEL.BACKBONE.PATH", "{rn}"],
     ["holds the architecture of tiny_rn", "not backbone tiny_vit"]),
    (["MODEL.BACKBONE.NAME", "open_clip:ViT-B-16-SigLIP", "MODEL.BACKBONE.PRETRAINED", "random"],
     ["cannot be prompt-tuned here", "pools with 'last'", "supported are OpenAI CLIPs"]),
    (["MODEL.BACKBONE.NAME", "RN50", "MODEL.BACKBONE.PRETRAINED", "laion2b_s34b_b79k"],
     ["is an OpenCLIP weights tag, but backbone rn50", "use open_clip:RN50"]),
    (["MODEL.BACKBONE.NAME", "", "MODEL.BACKBONE.PATH", "{rn}"],
     ["MODEL.BACKBONE.NAME is empty", "it holds the architecture of tiny_rn"]),
]


@pytest.mark.parametrize("opts,expect", BAD_BACKBONES[:3])
def test_bad_backbone_inputs_exit_2_and_write_nothing(demo_root, tmp_path, other_arch_checkpoints,
                                                      opts, expect):
    """Through the real train.py: one error line, exit code 2, no output folder (the
    checkpoint of another architecture is found while the trainer is built, after the
    log and config.yaml were opened: they are removed again)."""
    out = tmp_path / "new" / "out"
    opts = [o.format(oc_rn=other_arch_checkpoints["open_clip:tiny-RN"],
                     rn=other_arch_checkpoints["tiny_rn_random"]) for o in opts]
    proc = run_train("--root", demo_root, "--trainer", "CoOp", "--output-dir", out,
                     "--dataset-config-file", "configs/datasets/demo.yaml",
                     "--config-file", "configs/trainers/CoOp/tiny_vit_ep10.yaml", *opts,
                     check=False, env={"CLIP_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), proc.stderr
    for text in expect:
        assert text in err[0], (text, err[0])
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("opts,expect", BAD_BACKBONES[3:])
def test_more_bad_backbone_inputs_through_train_cli(demo_root, tmp_path, capsys,
                                                    other_arch_checkpoints, opts, expect):
    """The same checks through train.cli in this process (no interpreter start per case);
    an existing output folder keeps exactly what it held."""
    import train

    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    opts = [o.format(oc_rn=other_arch_checkpoints["open_clip:tiny-RN"],
                     rn=other_arch_checkpoints["tiny_rn_random"]) for o in opts]
    stdout = sys.stdout
    with pytest.raises(SystemExit) as e:
        train.cli(["--root", demo_root, "--trainer", "CoOp", "--output-dir", str(out),
                   "--dataset-config-file", osp.join(ROOT, "configs/datasets/demo.yaml"),
                   "--config-file", osp.join(ROOT, "configs/trainers/CoOp/tiny_vit_ep10.yaml"),
                   *opts])
    assert sys.stdout is stdout  # the log's tee is undone
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for text in expect:
        assert text in err[0], (text, err[0])
    assert sorted(os.listdir(out)) == ["notes.txt"]


def test_a_checkpoint_file_alone_builds_its_registered_backbone(other_arch_checkpoints,
                                                                tmp_path):
    """The factory takes a name or a checkpoint path: a file's architecture is looked up
    in the registry; shapes of an OpenAI and an OpenCLIP entry at once need the name."""
    model, pre = create_backbone(other_arch_checkpoints["tiny_rn_random"])
    ref, _ = create_backbone("tiny_rn_random", random_weights=True)
    assert pre["size"] == 32 and type(model) is type(ref)
    img = torch.randn(2, 3, 32, 32)
    # clip's build_model rounds the file's weights through fp16 (convert_weights)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(img), ref.encode_image(img), rtol=0, atol=1e-3)
    model, pre = create_backbone(other_arch_checkpoints["open_clip:tiny-RN"])
    assert pre["size"] == 64 and type(model).__module__ == "open_clip.model"
    torch.save(create_backbone("tiny_vit_random", random_weights=True)[0].state_dict(),
               tmp_path / "vit.pt")
    with pytest.raises(UserError, match="architecture of tiny_vit / tiny_vit_random / "
                                        "open_clip:tiny-ViT; give its backbone name"):
        create_backbone(str(tmp_path / "vit.pt"))


@pytest.mark.filterwarnings("ignore")  # torch.jit.trace's warnings about the traced model
def test_openai_torchscript_file_loads_as_the_open_clip_architecture(tmp_path):
    """OpenAI's files (clip cache, the 'openai' tags) are TorchScript archives, which
    torch.load(weights_only=True) refuses, and their models use QuickGELU: loaded as the
    OpenCLIP architecture of the same shapes, the features equal the OpenAI model's."""
    ref, _ = create_backbone("tiny_vit")  # the OpenAI class, digits-pretrained
    img = torch.randn(2, 3, 32, 32)
    tok = tokenize(["a photo of the digit three.", "seven"])
    with torch.no_grad():
        torch.jit.trace(ref, (img, tok), check_trace=False).save(str(tmp_path / "tiny.pt"))
    model, _ = create_backbone("open_clip:tiny-ViT", path=str(tmp_path / "tiny.pt"))
    assert type(model).__module__ == "open_clip.model"
    with torch.no_grad():
        assert torch.allclose(model.encode_image(img), ref.encode_image(img), atol=1e-5)
        assert torch.allclose(model.encode_text(tok), ref.encode_text(tok), atol=1e-5)
    # the same weights as a plain state dict: the file cannot say its activation, so it is
    # asked for; GELU (open_clip:tiny-ViT's) gives other features
    torch.save(ref.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(UserError, match="MODEL.BACKBONE.ACTIVATION gelu .*or .*quick_gelu "
                                        "with MODEL.BACKBONE.NAME tiny_vit"):
        create_backbone("open_clip:tiny-ViT", path=str(tmp_path / "plain.pt"))
    plain, _ = create_backbone("open_clip:tiny-ViT", path=str(tmp_path / "plain.pt"),
                               activation="gelu")
    with torch.no_grad():
        assert (plain.encode_image(img) - ref.encode_image(img)).abs().max() > 1e-3


# Each trainer on an OpenCLIP backbone (random weights), the three tower kinds spread
# over them: ViT, ModifiedResNet, timm ConvNeXt with an nn.Linear text projection.
TRAINER_BACKBONES = [
    ("ZeroshotCLIP", "ZeroshotCLIP/tiny_vit.yaml", "open_clip:tiny-ViT"),
    ("LinearProbeCLIP", "LinearProbeCLIP/tiny_vit.yaml", "open_clip:tiny-RN"),
    ("CoOp", "CoOp/tiny_vit_ep10.yaml", "open_clip:tiny-convnext"),
    ("CoCoOp", "CoCoOp/tiny_vit_c4_ep10_batch1_ctxv1.yaml", "open_clip:tiny-RN"),
    ("CoOpMT", "CoOpMT/tiny_vit_ep10.yaml", "open_clip:tiny-ViT"),
    ("SoftCPT", "SoftCPT/tiny_vit_ep10.yaml", "open_clip:tiny-convnext"),
    ("DualViewMI", "DualViewMI/tiny_vit_ep10.yaml", "open_clip:tiny-RN"),
    ("KgCoOp", "KgCoOp/tiny_vit_ep10.yaml", "open_clip:tiny-ViT"),
]


@pytest.mark.parametrize("trainer_name,config,backbone", TRAINER_BACKBONES,
                         ids=[t[0] for t in TRAINER_BACKBONES])
def test_every_trainer_runs_on_an_open_clip_backbone(demo_root, tmp_path, trainer_name, config,
                                                     backbone):
    """One epoch (one shot per class of the digit task): learnable weights move, the
    test split is evaluated, results.json names the backbone and its weights."""
    from toolbox.utils import set_random_seed

    out = tmp_path / "out"
    cfg = make_cfg(demo_root, "configs/datasets/demo.yaml", "configs/trainers/" + config,
                   ["--trainer", trainer_name, "--output-dir", str(out), "--seed", "1",
                    "DATASET.NUM_SHOTS", "1", "DATASET.TASKS", "['DemoDigit']", "VERBOSE", "False",
                    "OPTIM.MAX_EPOCH", "1", "MODEL.BACKBONE.NAME", backbone,
                    "MODEL.BACKBONE.PRETRAINED", "random"])
    set_random_seed(1)
    trainer = build_trainer(cfg)
    assert type(trainer.clip_model).__module__.startswith("open_clip")
    before = {f"{n}.{k}": v.detach().clone() for n in trainer.get_model_names()
              for k, v in trainer._models[n].state_dict().items()}
    if trainer_name == "ZeroshotCLIP":
        assert not before
        trainer.test()
    else:
        trainer.train()
    after = {f"{n}.{k}": v for n in trainer.get_model_names()
             for k, v in trainer._models[n].state_dict().items()}
    if trainer_name not in ("ZeroshotCLIP", "LinearProbeCLIP"):
        assert before and any(not torch.equal(before[k], after[k]) for k in before), \
            "no learnable weight moved"
    with open(out / "results.json") as f:
        res = json.load(f)
    assert res["backbone"] == backbone and res["backbone_pretrained"] == "random"
    assert [t["task"] for t in res["tasks"]] == ["DemoDigit"] and 0 <= res["overall"] <= 100
    assert res["tasks"][0]["total"] == len(trainer.dm.dataset.test)


def test_grid_names_folders_by_the_canonical_backbone_and_its_tag(demo_root):
    """Aliases become the canonical name in folders; an OpenCLIP tag goes into the folder
    (<name>@<tag>_<schedule>) and to the OpenCLIP backbones only."""
    from tools.grid import expand

    def outs(**spec):
        return {r.backbone: (r.out, r.argv) for r in expand(
            dict(methods=["coop"], datasets=["eurosat"], shots=["16"], seeds=["1"], **spec))}

    runs = outs(backbones=["RN50", "ViT-B/16", "tiny-vit-digits", "oc_vit_b32"],
                pretrained="laion2b_s34b_b79k")
    assert set(runs) == {"rn50", "vit_b16", "tiny_vit", "open_clip:ViT-B-32@laion2b_s34b_b79k"}
    assert "/CoOp/rn50_ep200_16shots/" in runs["rn50"][0]
    assert "/CoOp/tiny_vit_ep10_16shots/" in runs["tiny_vit"][0]
    oc_out, oc_argv = runs["open_clip:ViT-B-32@laion2b_s34b_b79k"]
    assert "/CoOp/open_clip:ViT-B-32@laion2b_s34b_b79k_ep200_16shots/" in oc_out
    assert oc_argv[oc_argv.index("MODEL.BACKBONE.NAME") + 1] == "open_clip:ViT-B-32"
    assert oc_argv[oc_argv.index("MODEL.BACKBONE.PRETRAINED") + 1] == "laion2b_s34b_b79k"
    assert "MODEL.BACKBONE.PRETRAINED" not in runs["rn50"][1]
    with pytest.raises(UserError, match="weights named: --pretrained <tag> .*PRETRAINED="):
        outs(backbones=["oc_vit_b32"])
    with pytest.raises(UserError, match="no backbone of the grid is an OpenCLIP model"):
        outs(backbones=["rn50"], pretrained="laion2b_s34b_b79k")


def test_script_run_on_an_open_clip_backbone_folder_and_results_agree(demo_root, tmp_path):
    """bash scripts/coop/main.sh DATASET SHOTS open_clip:<arch> with PRETRAINED: the folder
    is <name>@<tag>_<schedule>, results.json says the same backbone and tag, and the
    result tools find the run under that name."""
    env = {**os.environ, "DATA": demo_root, "SEEDS": "1", "PRETRAINED": "random",
           "OPTS": "OPTIM.MAX_EPOCH 1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", osp.join(ROOT, "scripts/coop/main.sh"), "demo_digit", "1",
                           "open_clip:tiny-ViT"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / "output/demo_digit/CoOp/open_clip:tiny-ViT@random_ep50_1shots"
    (variant,) = os.listdir(exp)
    with open(exp / variant / "seed1" / "results.json") as f:
        res = json.load(f)
    assert (res["backbone"], res["backbone_pretrained"]) == ("open_clip:tiny-ViT", "random")
    from tools.compare import canonical_backbone, collect

    methods = collect(str(tmp_path / "output"), "demo_digit",
                      canonical_backbone("open_clip:tiny-ViT@random"))
    assert [m.trainer for m in methods.values()] == ["CoOp"]


def test_backbones_tool_lists_names_and_local_weights(tmp_path):
    proc = subprocess.run([sys.executable, osp.join(ROOT, "tools/backbones.py"), "--json",
                           "--filter", "*vit*"], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, CLIP_CACHE=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["vit_b16"]["aliases"] == ["ViT-B/16"] and rows["vit_b16"]["weights"] == "missing"
    assert rows["tiny_vit_random"]["weights"] == "built in"
    assert "open_clip:ViT-B-32" in rows
