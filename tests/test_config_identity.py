"""Trainer configs state only what differs (``_BASE_`` includes), and a run's identity
(its config digest) survives upgrades: the restructured YAML files and every key added
at its neutral value leave existing digests exactly as they were."""
import glob
import json
import os
import os.path as osp
import sys

import pytest
import yaml

from tests.conftest import ROOT, make_cfg, run_train
from toolbox.errors import UserError

# (importing clip the first time: openai-clip imports the deprecated pkg_resources)
pytestmark = pytest.mark.filterwarnings("ignore:pkg_resources is deprecated")

TABLE = osp.join(ROOT, "tests", "data", "trainer_config_digests.json")
TRAINER_FILES = sorted(glob.glob(osp.join(ROOT, "configs", "trainers", "*", "*.yaml")))


def _digest(trainer_file, dataset_file, opts=()):
    from toolbox.config import config_digest
    from toolbox.config_pipeline import cfg_from_argv

    trainer = trainer_file.split("/")[2]
    return config_digest(cfg_from_argv(
        ["--root", "/nonexistent", "--trainer", trainer,
         "--dataset-config-file", osp.join(ROOT, "configs", "datasets", dataset_file),
         "--config-file", osp.join(ROOT, trainer_file), *opts]))


def test_every_trainer_config_keeps_the_digest_it_had_before_the_restructure():
    """tests/data/trainer_config_digests.json was computed from the files as they were
    (one recipe copied into every backbone file) before they became bases plus
    differences, and before MODEL.BACKBONE.NAME took clip's spelling."""
    with open(TABLE) as f:
        table = json.load(f)
    assert sorted(table) == sorted(osp.relpath(p, ROOT) for p in TRAINER_FILES)
    changed = [(path, ds) for path, row in sorted(table.items()) for ds, want in row.items()
               if _digest(path, ds) != want]
    assert not changed


def test_backbone_files_inherit_a_recipe_and_state_only_their_backbone():
    from toolbox.config import load_trainer_yaml

    for path in TRAINER_FILES:
        with open(path) as f:
            raw = yaml.safe_load(f)
        assert set(raw) == {"_BASE_", "MODEL"} and set(raw["MODEL"]) == {"BACKBONE"}, path
        name = raw["MODEL"]["BACKBONE"]["NAME"]
        assert raw["MODEL"]["BACKBONE"] == {"NAME": name}, path
        assert osp.basename(path)[len(name)] in "_.", path  # <backbone>_<schedule>.yaml
        merged = load_trainer_yaml(path)
        assert "_BASE_" not in merged and merged["DATALOADER"]["TEST"]["BATCH_SIZE"] >= 100


def _write(path, text):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_base_includes_resolve_relative_to_the_including_file_in_order(tmp_path):
    from toolbox.config_pipeline import cfg_from_argv

    _write(tmp_path / "shared" / "recipe.yaml", "OPTIM:\n  LR: 0.5\n  MAX_EPOCH: 7\n")
    _write(tmp_path / "m" / "base" / "a.yaml",
           "_BASE_: ../../shared/recipe.yaml\nOPTIM:\n  MAX_EPOCH: 3\nTRAIN:\n  PRINT_FREQ: 2\n")
    _write(tmp_path / "m" / "base" / "b.yaml", "TRAIN:\n  PRINT_FREQ: 9\n")
    child = _write(tmp_path / "m" / "child.yaml",
                   "_BASE_: [base/a.yaml, base/b.yaml]\nOPTIM:\n  LR: 0.25\n")
    cfg = cfg_from_argv(["--config-file", child])
    # a's base, then a, then b, then the file itself
    assert (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.TRAIN.PRINT_FREQ) == (0.25, 3, 9)
    # yacs' own merge_from_file on the config object resolves _BASE_ too (ported code)
    from toolbox.config import get_cfg_default

    plain = get_cfg_default()
    plain.merge_from_file(child)
    assert (plain.OPTIM.LR, plain.OPTIM.MAX_EPOCH) == (0.25, 3)


@pytest.mark.parametrize("files,top,expect", [
    ({"c.yaml": "_BASE_: base/missing.yaml\n"}, "c.yaml",
     ["_BASE_ of", "c.yaml: file not found:", "base/missing.yaml", "relative to the including"]),
    ({"a.yaml": "_BASE_: b.yaml\n", "b.yaml": "_BASE_: a.yaml\n"}, "a.yaml",
     ["include each other through _BASE_", "a.yaml -> ", "b.yaml -> "]),
    ({"c.yaml": "_BASE_: bad.yaml\n", "bad.yaml": "OPTIM:\n  LR: [0.1\n"}, "c.yaml",
     ["bad.yaml is not valid YAML", "line 3"]),
    ({"c.yaml": "_BASE_: 3\n"}, "c.yaml", ["_BASE_ must be a file path or a list of paths"]),
])
def test_a_bad_base_is_one_error_line_and_exit_code_2(tmp_path, capsys, files, top, expect):
    import train

    for name, text in files.items():
        _write(tmp_path / name, text)
    stdout = sys.stdout
    with pytest.raises(SystemExit) as e:
        train.cli(["--trainer", "CoOp", "--config-file", str(tmp_path / top),
                   "--output-dir", str(tmp_path / "out")])
    assert sys.stdout is stdout and e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for text in expect:
        assert text in err[0], (text, err[0])
    assert not (tmp_path / "out").exists()


def test_every_key_added_after_the_identity_baseline_declares_its_neutral_value():
    """Else adding it changed the digest of every existing run (toolbox/config.py, 'Run
    identity'): declare it in NEUTRAL_VALUES (or with declare_neutral in extend_cfg)."""
    from toolbox.config import NEUTRAL_VALUES, _leaves, identity_baseline_keys
    from toolbox.config_pipeline import default_config

    baseline = identity_baseline_keys()
    undeclared = [k for k, _ in _leaves(default_config())
                  if k not in baseline and k not in NEUTRAL_VALUES]
    assert not undeclared


def _add_key(monkeypatch, value):
    """A trainer's extend_cfg gains TRAINER.COOP.NEW_KEY (default ``value``) and a new
    method's group TRAINER.NEWMETHOD, both declared at their neutral values."""
    import trainers
    from toolbox.config import NEUTRAL_VALUES, declare_neutral
    from yacs.config import CfgNode as CN

    original = trainers.extend_cfg

    def extend_cfg(cfg):
        original(cfg)
        cfg.TRAINER.COOP.NEW_KEY = value
        cfg.TRAINER.NEWMETHOD = CN()
        cfg.TRAINER.NEWMETHOD.DEPTH = 3
        cfg.TRAINER.NEWMETHOD.MODE = "plain"

    monkeypatch.setattr(trainers, "extend_cfg", extend_cfg)
    monkeypatch.setattr("toolbox.config.NEUTRAL_VALUES", dict(NEUTRAL_VALUES))
    declare_neutral("TRAINER.COOP.NEW_KEY", False)
    group = CN()
    group.DEPTH, group.MODE = 3, "plain"
    declare_neutral("TRAINER.NEWMETHOD", group)


def test_a_key_added_at_its_neutral_value_keeps_finished_runs_their_identity(
        demo_root, tmp_path, monkeypatch, capsys):
    import toolbox.config
    import train
    from toolbox.config import config_digest
    from toolbox.run_folder import _config_of, check_run_folder

    out = str(tmp_path / "run")
    args = ["--root", demo_root, "--seed", "1", "--trainer", "CoOp",
            "--dataset-config-file", "configs/datasets/demo.yaml",
            "--config-file", "configs/trainers/CoOp/tiny_vit_ep10.yaml", "--output-dir", out]
    opts = ["DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1"]
    run_train(*args, *opts)  # made before the key existed
    with open(osp.join(out, "results.json")) as f:
        finished = json.load(f)

    def cfg_here(*extra, flags=()):
        return make_cfg(demo_root, "configs/datasets/demo.yaml",
                        "configs/trainers/CoOp/tiny_vit_ep10.yaml",
                        ["--seed", "1", "--trainer", "CoOp", "--output-dir", out, *flags, *opts,
                         *extra])

    before = config_digest(cfg_here())
    assert before == finished["config_digest"]
    with open(TABLE) as f:
        table = json.load(f)
    some = ["configs/trainers/CoOp/tiny_vit_ep10.yaml", "configs/trainers/SoftCPT/rn50_ep50.yaml"]

    _add_key(monkeypatch, False)
    cfg = cfg_here()
    assert cfg.TRAINER.COOP.NEW_KEY is False and cfg.TRAINER.NEWMETHOD.DEPTH == 3
    assert config_digest(cfg) == before
    assert all(_digest(p, ds) == table[p][ds] for p in some for ds in ("demo.yaml", "eurosat.yaml"))
    # the run folder check, --resume, --eval-only and the config.yaml it wrote all agree
    check_run_folder(cfg, eval_only=True)
    check_run_folder(cfg_here(flags=["--resume", out]))
    assert _config_of(out, before) is not None  # its config.yaml, without the key: same run
    stdout = sys.stdout
    try:
        train.cli([*args, "--eval-only", "--model-dir", out, "--load-epoch", "1", *opts])
    finally:
        if sys.stdout is not stdout:  # train.py's log tee
            sys.stdout.close()
            sys.stdout = stdout
    capsys.readouterr()
    with open(osp.join(out, "results.json")) as f:
        again = json.load(f)
    assert (again["config_digest"], again["overall"]) == (before, finished["overall"])

    # another value computes something else: another run
    other = cfg_here("TRAINER.COOP.NEW_KEY", "True")
    assert config_digest(other) != before
    with pytest.raises(UserError, match=r"TRAINER\.COOP\.NEW_KEY False there, True here"):
        check_run_folder(other, eval_only=True)
    assert config_digest(cfg_here("TRAINER.NEWMETHOD.DEPTH", "4")) != before
    # an undeclared key counts: a new digest, never a false "same run"
    del toolbox.config.NEUTRAL_VALUES["TRAINER.COOP.NEW_KEY"]
    assert config_digest(cfg_here()) != before


def test_a_changed_neutral_key_default_changes_the_digest(monkeypatch):
    """Declared once, the neutral value stays: a later default is another computation."""
    _add_key(monkeypatch, True)  # the key's default moved away from its neutral False
    assert _digest("configs/trainers/CoOp/tiny_vit_ep10.yaml", "demo.yaml") != json.load(
        open(TABLE))["configs/trainers/CoOp/tiny_vit_ep10.yaml"]["demo.yaml"]


def test_tools_build_their_configs_with_the_one_pipeline():
    """check_data, cache and bench build configs with toolbox.config_pipeline, not
    through train.py or their own merges."""
    for tool in ("check_data", "cache", "bench"):
        with open(osp.join(ROOT, "tools", f"{tool}.py")) as f:
            text = f.read()
        assert "config_pipeline import cfg_from_argv" in text, tool
        assert "import train\n" not in text and "merge_from_file" not in text, tool


def test_rerunning_a_finished_grid_after_a_key_was_added_skips_every_run(
        demo_root, tmp_path, monkeypatch, capsys):
    """tools/grid.py recognises its finished runs by their digest: a new key at its neutral
    value leaves the grid nothing to run; another value of it would run again."""
    import subprocess

    from tools import grid

    def argv(*opts):
        return ["--methods", "coop", "--datasets", "demo", "--shots", "1", "--seeds", "1",
                "--opts", "OPTIM.MAX_EPOCH", "1", *opts, "--data", demo_root,
                "--output-root", str(tmp_path / "output")]

    first = subprocess.run([sys.executable, osp.join(ROOT, "tools", "grid.py"), *argv()],
                           cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert first.returncode == 0 and "1 done, 0 skipped, 0 failed" in first.stdout, first.stderr
    _add_key(monkeypatch, False)
    assert grid.main(argv()) == 0
    assert "Grid: 1 runs, 1 finished already (skipped), 0 to run" in capsys.readouterr().out
    assert grid.main(argv("TRAINER.COOP.NEW_KEY", "True") + ["--dry-run"]) == 0
    assert "Grid: 1 runs, 0 finished already (skipped), 1 to run" in capsys.readouterr().out
