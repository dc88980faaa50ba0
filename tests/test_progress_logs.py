"""What a run tells its user: a two-line header on stdout, the full config in
<output>/config.yaml (and on stdout only with --verbose), a line-buffered
log.txt, and progress bars on stderr for evaluation and feature extraction."""
import json
import os
import os.path as osp

from tests.conftest import ROOT, make_cfg, run_train
from toolbox.config import config_digest
from toolbox.utils.logger import Logger


def demo_args(root, out, trainer="CoOp", config="configs/trainers/CoOp/tiny_vit_ep10.yaml"):
    return ["--root", root, "--seed", "2", "--trainer", trainer,
            "--dataset-config-file", "configs/datasets/demo.yaml", "--config-file", config,
            "--output-dir", out, "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1"]


def test_header_config_yaml_and_progress(demo_root, tmp_path):
    out = str(tmp_path / "run")
    proc = run_train(*demo_args(demo_root, out))
    first = proc.stdout.splitlines()[:2]
    assert first[0].startswith("** train CoOp on Demo | backbone tiny_vit | 1 shots | "
                               "seed 2"), first
    assert first[1].startswith(f"** output {out}"), first
    assert "** Config **" not in proc.stdout and "** System info **" not in proc.stdout
    assert "TRAINER:" not in proc.stdout  # no config dump
    # progress on stderr, not in the log
    assert "evaluate test" in proc.stderr
    log = open(osp.join(out, "log.txt")).read()
    assert "evaluate test:" not in log and log.startswith("** train CoOp")
    # config.yaml is the whole config: train.py reads it back to the same digest
    with open(osp.join(out, "results.json")) as f:
        digest = json.load(f)["config_digest"]
    again = make_cfg(demo_root, trainer_config=osp.join(out, "config.yaml"),
                     opts=["--trainer", "CoOp", "--seed", "2"])
    assert config_digest(again) == digest


def test_verbose_prints_the_full_config(demo_root, tmp_path):
    proc = run_train("--verbose", "--no-train", *demo_args(demo_root, str(tmp_path / "run")))
    assert "** Config **" in proc.stdout and "** System info **" in proc.stdout
    assert "TRAINER:" in proc.stdout and "COOP:" in proc.stdout


def test_linear_probe_feature_extraction_shows_progress(demo_root, tmp_path):
    proc = run_train(*demo_args(demo_root, str(tmp_path / "lp"), "LinearProbeCLIP",
                                "configs/trainers/LinearProbeCLIP/tiny_vit.yaml"))
    # through the feature cache ("Encoding images") or without one ("image features")
    assert "Encoding images" in proc.stderr or "image features" in proc.stderr
    log = open(osp.join(str(tmp_path / "lp"), "log.txt")).read()
    assert "Encoding images" not in log and "%|" not in log


def test_evaluation_into_a_cold_cache_shows_progress(demo_root, tmp_path):
    def run(tag):
        return run_train("--root", demo_root, "--trainer", "ZeroshotCLIP",
                         "--dataset-config-file", "configs/datasets/demo.yaml",
                         "--config-file", "configs/trainers/ZeroshotCLIP/tiny_vit.yaml",
                         "--output-dir", str(tmp_path / tag),
                         "FEATURE_CACHE.DIR", str(tmp_path / "cache"))

    cold = run("cold")
    assert "Encoding images" in cold.stderr and "img/s" in cold.stderr
    assert "Image features (test): 0 from the cache" in cold.stdout
    warm = run("warm")  # nothing to encode: no bar
    assert "Encoding images" not in warm.stderr
    assert "Image features (test): 1619 from the cache, 0 encoded" in warm.stdout


def test_log_file_is_line_buffered(tmp_path):
    path = tmp_path / "log.txt"
    logger = Logger(str(path))
    try:
        logger.write("epoch [1/10] batch [1/5] loss 1.0\n")
        # read through another handle, before any flush
        assert open(path).read() == "epoch [1/10] batch [1/5] loss 1.0\n"
    finally:
        logger.close()


def test_tqdm_disable_turns_off_every_bar():
    """TQDM_DISABLE=1 (docs/reproducibility.md) silences the bars, the tiny pre-training's too, whose
    caller passes disable=False when it wants a bar."""
    import subprocess
    import sys

    code = ("from toolbox.utils.progress import progress\n"
            "print(progress(range(3), 'x', disable=False).disable, "
            "progress(range(3), 'y').disable)\n")
    for env, want in (({"TQDM_DISABLE": "1"}, "True True"), ({}, "False False")):
        full = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                             text=True, check=True, env={**full, **env}).stdout.strip()
        assert out == want, (env, out)
