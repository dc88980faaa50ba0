"""Code written against upstream Dassl's API runs here after renaming
``dassl`` to ``toolbox``: a trainer and a dataset in the style of CoOp's
files (our own code, using only Dassl's public names), run by train.py."""
import json
import os
import re
import subprocess
import sys
import textwrap

from tests.conftest import ROOT, make_cfg, run_train

DATASET_FILE = '''
import os
from dassl.data.datasets import DATASET_REGISTRY, Datum, DatasetBase
from dassl.utils import listdir_nohidden, mkdir_if_missing, read_json, write_json


@DATASET_REGISTRY.register()
class PortedDigits(DatasetBase):
    dataset_dir = "demo_digits"

    def __init__(self, cfg):
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.dataset_dir = os.path.join(root, self.dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, "images")
        self.split_path = os.path.join(self.dataset_dir, "split_ported.json")
        self.split_fewshot_dir = os.path.join(self.dataset_dir, "split_fewshot_ported")
        mkdir_if_missing(self.split_fewshot_dir)
        if os.path.exists(self.split_path):
            train, val, test = self.read_split(self.split_path, self.image_dir)
        else:
            items = []
            for label, folder in enumerate(listdir_nohidden(self.image_dir, sort=True)):
                for f in sorted(os.listdir(os.path.join(self.image_dir, folder)))[:12]:
                    items.append(Datum(impath=os.path.join(self.image_dir, folder, f),
                                       label=label, classname="digit " + folder))
            train, val, test = items[0::3], items[1::3], items[2::3]
            self.save_split(train, val, test, self.split_path, self.image_dir)
        num_shots = cfg.DATASET.NUM_SHOTS
        if num_shots >= 1:
            path = os.path.join(self.split_fewshot_dir, f"shot_{num_shots}-seed_{cfg.SEED}.json")
            if os.path.exists(path):
                data = read_json(path)
                train = [Datum(**d) for d in data["train"]]
            else:
                train = self.generate_fewshot_dataset(train, num_shots=num_shots)
                write_json({"train": [dict(impath=d.impath, label=d.label,
                                           classname=d.classname) for d in train]}, path)
        train, val, test = self.subsample_classes(train, val, test,
                                                  subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=train, val=val, test=test)
'''

TRAINER_FILE = '''
import torch
import torch.nn as nn
import torch.nn.functional as F
from dassl.engine import TRAINER_REGISTRY, TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_optimizer, build_lr_scheduler
from dassl.utils import load_checkpoint


class LinearOnFrozenImage(nn.Module):
    def __init__(self, clip_model, n_cls):
        super().__init__()
        self.visual = clip_model.visual
        self.head = nn.Linear(clip_model.visual.output_dim, n_cls)

    def forward(self, image):
        with torch.no_grad():
            feats = F.normalize(self.visual(image).float(), dim=-1)
        return self.head(feats)


@TRAINER_REGISTRY.register()
class PortedLinear(TrainerX):
    def build_model(self):
        from trainers.clip_model import load_clip
        clip_model = load_clip(self.cfg.MODEL.BACKBONE.NAME)
        self.model = LinearOnFrozenImage(clip_model, len(self.dm.dataset.classnames))
        self.model.to(self.device)
        self.optim = build_optimizer(self.model.head, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("head", self.model.head, self.optim, self.sched)

    def forward_backward(self, batch):
        image, label = self.parse_batch_train(batch)
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        loss_summary = {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return loss_summary

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def load_model(self, directory, epoch=None):
        for name in self.get_model_names():
            path = f"{directory}/{name}/model.pth.tar-{epoch}"
            checkpoint = load_checkpoint(path)
            self._models[name].load_state_dict(checkpoint["state_dict"], strict=False)
'''

RUNNER = '''
import sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {plugin!r})
import ported_dataset, ported_trainer  # registers them
import train
train.cli()
'''


def test_upstream_style_files_run_after_renaming_dassl(demo_root, tmp_path):
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    # the files are written against dassl.*; the port is the documented sed
    for name, text in [("ported_dataset.py", DATASET_FILE), ("ported_trainer.py", TRAINER_FILE)]:
        (plugin / name).write_text(text)
        subprocess.run(["sed", "-i", r"s/\bdassl\b/toolbox/g", str(plugin / name)], check=True)
    runner = plugin / "run.py"
    runner.write_text(textwrap.dedent(RUNNER.format(root=ROOT, plugin=str(plugin))))
    out = tmp_path / "out"
    argv = ["--root", demo_root, "--seed", "1", "--trainer", "PortedLinear",
            "--config-file", os.path.join(ROOT, "configs/trainers/CoOp/tiny_vit_ep10.yaml"),
            "--output-dir", str(out), "DATASET.NAME", "PortedDigits", "DATASET.NUM_SHOTS", "2",
            "OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.5"]
    proc = subprocess.run([sys.executable, str(runner), *argv], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["trainer"] == "PortedLinear" and results["tasks"][0]["total"] == 40
    assert os.path.exists(out / "head" / "model.pth.tar-2")
    again = subprocess.run([sys.executable, str(runner), *argv[:-8], "--eval-only",
                            "--model-dir", str(out), "--load-epoch", "2",
                            "--output-dir", str(tmp_path / "eval"),
                            "DATASET.NAME", "PortedDigits", "DATASET.NUM_SHOTS", "2"],
                           cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert evaluated["overall"] == results["overall"]


def _losses(log):
    return re.findall(r" loss ([0-9.]+) \(", log)


def test_upstream_coop_style_trainer_finds_its_clip_and_matches_our_coop(demo_root, tmp_path):
    """A CoOp written as CoOp's own file is (tests/data/upstream_style_coop.py: dassl.*,
    ``clip._download(clip._MODELS[cfg.MODEL.BACKBONE.NAME])``, clip.build_model), ported
    by the sed,
    trains through train.py on the tiny CLIP and computes what our CoOp computes:
    the same loss at every logged step and the same test accuracy."""
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    with open(os.path.join(ROOT, "tests", "data", "upstream_style_coop.py")) as f:
        (plugin / "ported_coop.py").write_text(f.read())
    subprocess.run(["sed", "-i", r"s/\bdassl\b/toolbox/g", str(plugin / "ported_coop.py")],
                   check=True)
    runner = plugin / "run.py"
    runner.write_text(textwrap.dedent(RUNNER.format(root=ROOT, plugin=str(plugin)))
                      .replace("import ported_dataset, ported_trainer", "import ported_coop"))
    common = ["--root", demo_root, "--seed", "1",
              "--dataset-config-file", os.path.join(ROOT, "configs/datasets/demo_digit.yaml"),
              "--config-file", os.path.join(ROOT, "configs/trainers/CoOp/tiny_vit_ep10.yaml"),
              "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "2", "TRAINER.COOP.PREC", "fp32",
              "FEATURE_CACHE.ENABLED", "False"]
    # clip._download(url) copies the weights into a clip cache of its own
    env = dict(os.environ, CLIP_CACHE=str(tmp_path / "clip"))
    ported = subprocess.run([sys.executable, str(runner), "--trainer", "UpstreamStyleCoOp",
                             "--output-dir", str(tmp_path / "ported"), *common],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    assert (tmp_path / "clip" / "tiny_vit.pt").is_file()
    assert ported.returncode == 0, ported.stderr[-3000:]
    ours = run_train("--trainer", "CoOp", "--output-dir", str(tmp_path / "ours"), *common)
    theirs_res = json.loads((tmp_path / "ported" / "results.json").read_text())
    ours_res = json.loads((tmp_path / "ours" / "results.json").read_text())
    assert theirs_res["trainer"] == "UpstreamStyleCoOp" and theirs_res["backbone"] == "tiny_vit"
    assert len(_losses(ported.stdout)) == 4 and _losses(ported.stdout) == _losses(ours.stdout)
    assert theirs_res["overall"] == ours_res["overall"]
    assert theirs_res["config_digest"] != ours_res["config_digest"]  # (another trainer)


def test_openai_backbone_name_is_clips_own_spelling(demo_root):
    """cfg.MODEL.BACKBONE.NAME is what upstream code looks up in clip._MODELS; folders,
    results.json and the digest use the canonical name."""
    from toolbox.config import canonical_backbone, config_digest
    from trainers.backbones import canonical_name
    from trainers.upstream_clip import clip_api as clip

    for config, opts, name, canon in [("rn50_ep50", [], "RN50", "rn50"),
                                      ("vit_b16_ep50", [], "ViT-B/16", "vit_b16"),
                                      ("vit_b16_ep50", ["MODEL.BACKBONE.NAME", "vit_l14_336"],
                                       "ViT-L/14@336px", "vit_l14_336")]:
        cfg = make_cfg(demo_root, "configs/datasets/demo.yaml",
                       f"configs/trainers/CoOp/{config}.yaml", opts)
        assert cfg.MODEL.BACKBONE.NAME == name and name in clip._MODELS
        assert canonical_name(cfg) == canonical_backbone(cfg) == canon
        # the same run whichever spelling the command line used
        again = make_cfg(demo_root, "configs/datasets/demo.yaml",
                         f"configs/trainers/CoOp/{config}.yaml", ["MODEL.BACKBONE.NAME", name])
        assert config_digest(again) == config_digest(cfg)
