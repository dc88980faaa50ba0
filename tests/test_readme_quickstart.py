"""The README's quickstart, run as written on the demo: the bash block after the
`<!-- quickstart: ... -->` marker, without its install steps (the test runs in the
installed environment), with the environment the marker names (OPTS="OPTIM.MAX_EPOCH 1",
SEEDS="1": one short run instead of three of 10 epochs). The run folder and the files the
README says it writes are there, and the script ends with its mean ± std table."""
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys

from tests.conftest import ROOT

INSTALL = re.compile(r"^(python3? -m venv \S+|\. \S+/bin/activate|pip install -r requirements\.txt)$")


def quickstart():
    """(the marker's environment, the block's commands without the install steps)."""
    with open(osp.join(ROOT, "README.md")) as f:
        text = f.read()
    m = re.search(r"<!-- quickstart:(.*?)-->\s*```bash\n(.*?)```", text, re.S)
    assert m, "README.md has no '<!-- quickstart: ... -->' marker before a bash block"
    env = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
    parts = [p.strip() for p in m.group(2).replace("\\\n", " ").replace("\n", " && ").split("&&")]
    install = [p for p in parts if INSTALL.match(p)]
    assert "pip install -r requirements.txt" in install  # what .ci/run installs with
    return env, [p for p in parts if p and not INSTALL.match(p)], text


def test_readme_quickstart_runs_on_the_demo(demo_root, tmp_path):
    marker_env, cmds, readme = quickstart()
    assert set(marker_env) == {"OPTS", "SEEDS"}, marker_env
    assert cmds and all(c.startswith("bash scripts/") for c in cmds), cmds  # demo scripts only
    out_root = tmp_path / "output"
    env = dict(os.environ, DATA=demo_root, OUT_ROOT=str(out_root), PYTHON=sys.executable,
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **marker_env)
    proc = subprocess.run(" && ".join(cmds), shell=True, executable="/bin/bash", cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Mean ± std" in proc.stdout and "overall" in proc.stdout, proc.stdout[-2000:]

    # the folder the README names, for the marker's seed, holds what it says it does
    m = re.search(r"It writes `output/([^`]+)`", readme)
    assert m, "README.md: no 'It writes `output/...`' sentence after the quickstart"
    pattern = m.group(1).replace("<variant>", "*").replace("<S>", marker_env["SEEDS"].split()[0])
    (run,) = glob.glob(str(out_root / pattern))
    assert osp.isfile(osp.join(run, "log.txt"))
    with open(osp.join(run, "results.json")) as f:
        results = json.load(f)
    assert results["epoch"] == 1  # OPTS reached the run
    assert [t["task"] for t in results["tasks"]] == ["DemoDigit", "DemoParity", "DemoMagnitude"]
    assert glob.glob(osp.join(run, "**", "events.out.tfevents*"), recursive=True)  # TensorBoard
    assert glob.glob(osp.join(run, "**", "model.pth.tar-*"), recursive=True)  # checkpoints
