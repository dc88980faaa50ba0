"""docs/adding_a_method.md is a working example: its files, copied into a temporary
checkout with no other file edited, give a method that the generic script, the grid,
compare.py (table and plot), check_data, tools/methods.py and compare_all.sh use, and
whose own test passes."""
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

DOC = osp.join(ROOT, "docs", "adding_a_method.md")
BLOCK = re.compile(r"```(?:python|yaml)\n# file: (\S+)\n(.*?)```", re.S)


def doc_files():
    with open(DOC) as f:
        return BLOCK.findall(f.read())


def copy_checkout(dest):
    """The project's files (no outputs, caches or virtual environments)."""
    anywhere = shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", "*.pyc")

    def skip(folder, names):
        top = {"output", "data", ".venv", "venv"} if osp.samefile(folder, ROOT) else set()
        return set(anywhere(folder, names)) | (top & set(names))

    shutil.copytree(ROOT, dest, ignore=skip)


def run(cmd, cwd, env, check=True):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_doc_has_a_trainer_recipes_and_a_test():
    paths = [p for p, _ in doc_files()]
    assert any(p.startswith("trainers/") for p in paths)
    assert any(p.startswith("configs/trainers/") for p in paths)
    assert any(p.startswith("tests/") for p in paths)
    for p in paths:  # nothing else of the project is edited: only new files
        assert not osp.exists(osp.join(ROOT, p)), p


def test_a_method_added_by_its_files_alone_runs_everywhere(tmp_path, demo_root):
    work = tmp_path / "checkout"
    copy_checkout(str(work))
    for path, text in doc_files():
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"# file: {path}\n{text}")
    bindir = osp.dirname(sys.executable)
    env = dict(os.environ, DATA=demo_root, SEEDS="1", PYTHON=sys.executable,
               PATH=bindir + os.pathsep + os.environ.get("PATH", ""), PYTHONWARNINGS="ignore",
               OMP_NUM_THREADS="1", OPTS="OPTIM.MAX_EPOCH 1", OUT_ROOT=str(tmp_path / "out"))
    env.pop("PYTHONPATH", None)
    py = [sys.executable]

    listed = run(py + ["tools/methods.py"], work, env).stdout
    assert re.search(r"clip_adapter\s*\|\s*CLIPAdapter\s*\|\s*CLIP-Adapter", listed)

    # the generic script: the method's recipe, the grid runner, the mean +- std table
    out = run(["bash", "scripts/main.sh", "clip_adapter", "demo", "2"], work, env).stdout
    assert "demo/CLIPAdapter/tiny_vit_ep10_2shots/r0.2/seed1" in out
    assert osp.isfile(tmp_path / "out/demo/CLIPAdapter/tiny_vit_ep10_2shots/r0.2/seed1/results.json")

    # the comparison script with a method list, then compare.py's table and plot
    env_cmp = dict(env, METHODS="clip_adapter zsclip")
    cmp_out = run(["bash", "scripts/compare_all.sh", "demo", "2"], work, env_cmp).stdout
    assert "1 finished already (skipped)" in cmp_out  # the run above is reused
    assert re.search(r"\|\s*CLIP-Adapter\s*\|", cmp_out) or "CLIP-Adapter" in cmp_out
    assert osp.isfile(tmp_path / "out/demo/compare_tiny_vit.png")
    table = run(py + ["tools/compare.py", "--root", str(tmp_path / "out"), "--dataset", "demo",
                      "--shots", "2"], work, env).stdout
    header = table.splitlines()[1]
    assert "CLIP-Adapter" in header and "ZS-CLIP" in header

    # check_data finds the weights its recipe needs
    checked = run(py + ["tools/check_data.py", "--root", demo_root, "--dataset-config-file",
                        "configs/datasets/demo.yaml", "--method", "clip_adapter"], work, env)
    assert "CLIPAdapter/tiny_vit_ep10.yaml" in checked.stdout
    assert "backbone tiny_vit: weights found" in checked.stdout

    # the method's own test, as written in the doc
    test = [p for p, _ in doc_files() if p.startswith("tests/")][0]
    result = run(py + ["-m", "pytest", "-q", "-p", "no:cacheprovider", test], work, env,
                 check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
