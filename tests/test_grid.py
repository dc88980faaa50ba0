"""tools/grid.py: a demo grid run by the local executor with 2 workers gives the same
results.json metrics as the same runs one after another; finished runs are skipped by
their config digest, a changed config moves the old folder aside, an interrupted grid
resumes; bad inputs stop it before anything runs. The SLURM test (marker `slurm`) submits
a demo grid to a real SLURM through submitit."""
import json
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

GRID = osp.join(ROOT, "tools", "grid.py")
# 4 runs: CoOp and SoftCPT, seeds 1 and 2, 1 shot, one epoch on the tiny CLIP
SMALL = ["--methods", "coop", "softcpt:NATA", "--datasets", "demo", "--shots", "1",
         "--seeds", "1", "2", "--opts", "OPTIM.MAX_EPOCH", "1"]


def grid(*argv, cwd, data, check=True, timeout=600, env=None):
    proc = subprocess.run([sys.executable, GRID, "--data", data, *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"grid.py failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def results(root):
    """{run folder (relative): (overall, [task values])} of every results.json under root."""
    out = {}
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if "results.json" in files:
            with open(osp.join(dirpath, "results.json")) as f:
                r = json.load(f)
            out[osp.relpath(dirpath, root)] = (r["overall"], [t["value"] for t in r["tasks"]],
                                               r["config_digest"])
    return out


@pytest.fixture(scope="module")
def parallel_grid(demo_root, tmp_path_factory):
    """The 4-run grid with 2 workers (once for this module)."""
    cwd = tmp_path_factory.mktemp("grid_parallel")
    t0 = time.time()
    proc = grid(*SMALL, "--workers", "2", cwd=cwd, data=demo_root)
    return cwd, proc, time.time() - t0


def test_two_workers_give_the_sequential_results(parallel_grid, demo_root, tmp_path):
    cwd, proc, _ = parallel_grid
    assert "Grid: 4 runs, 0 finished already (skipped), 4 to run" in proc.stdout
    assert "4 done, 0 skipped, 0 failed" in proc.stdout
    assert "[4/4 finished]" in proc.stdout and "ETA" in proc.stdout
    # the mean +- std table of what ran, one block per experiment (both seeds)
    assert "## output/demo/SoftCPT/tiny_vit_ep10_1shots/NATA (seeds 1, 2)" in proc.stdout
    # two methods: tools/compare.py's side-by-side table of the dataset and backbone ends it
    table = proc.stdout.split("# demo, tiny_vit\n", 1)[1]
    assert table.startswith("## 1 shots\n") and "CoOp" in table and "SoftCPT" in table
    # the same runs one after another (the scripts' default): identical metrics
    seq = grid(*SMALL, cwd=tmp_path, data=demo_root)
    assert "[run 4 of 4]" in seq.stdout
    par, one = results(cwd / "output"), results(tmp_path / "output")
    assert sorted(par) == sorted(one) == sorted([
        "demo/CoOp/tiny_vit_ep10_1shots/nctx5_cscFalse_ctpend/seed1",
        "demo/CoOp/tiny_vit_ep10_1shots/nctx5_cscFalse_ctpend/seed2",
        "demo/SoftCPT/tiny_vit_ep10_1shots/NATA/seed1",
        "demo/SoftCPT/tiny_vit_ep10_1shots/NATA/seed2"])
    assert par == one
    # every run's own log lies in its folder
    assert all(osp.isfile(cwd / "output" / k / "grid.log") for k in par)


def test_finished_runs_are_skipped_and_a_changed_config_moves_the_old_aside(parallel_grid,
                                                                            demo_root):
    cwd, _, _ = parallel_grid
    before = results(cwd / "output")
    mtimes = {k: os.stat(cwd / "output" / k / "results.json").st_mtime_ns for k in before}
    again = grid(*SMALL, "--workers", "2", cwd=cwd, data=demo_root)
    assert "Grid: 4 runs, 4 finished already (skipped), 0 to run" in again.stdout
    assert "0 done, 4 skipped, 0 failed" in again.stdout
    assert {k: os.stat(cwd / "output" / k / "results.json").st_mtime_ns for k in before} \
        == mtimes
    # another learning rate for CoOp seed 1: digest differs -> old folder moved aside, redone
    run = "demo/CoOp/tiny_vit_ep10_1shots/nctx5_cscFalse_ctpend/seed1"
    changed = grid("--methods", "coop", "--datasets", "demo", "--shots", "1", "--seeds", "1",
                   "--opts", "OPTIM.MAX_EPOCH", "1", "OPTIM.LR", "0.0", cwd=cwd, data=demo_root)
    assert "Config changed: moved output/" + run in changed.stdout
    parent = cwd / "output" / osp.dirname(run)
    old = [d for d in os.listdir(parent) if d.startswith(".seed1.old-")]
    assert len(old) == 1
    with open(parent / old[0] / "results.json") as f:
        assert json.load(f)["config_digest"] == before[run][2]
    after = results(cwd / "output")
    assert after[run][2] != before[run][2]
    # the hidden folder is not read by the result tables
    assert sorted(after) == sorted(before)


def _wait_for(path, proc, timeout=300):
    t0 = time.time()
    while not osp.exists(path):
        if proc.poll() is not None or time.time() - t0 > timeout:
            return False
        time.sleep(0.01)
    return True


def test_interrupted_grid_resumes_to_the_uninterrupted_result(demo_root, tmp_path):
    # An epoch of this run takes about 25 ms on an idle CPU: 150 of them leave seconds
    # between the first checkpoint and the end, for the kill to land in.
    spec = ["--methods", "coop", "--datasets", "demo", "--shots", "1", "--seeds", "1",
            "--opts", "OPTIM.MAX_EPOCH", "150", "TRAIN.CHECKPOINT_FREQ", "1",
            "TRAIN.CHECKPOINT_KEEP", "1"]
    control = tmp_path / "control"
    control.mkdir()
    grid(*spec, cwd=control, data=demo_root)
    work = tmp_path / "work"
    work.mkdir()
    run = work / "output/demo/CoOp/tiny_vit_ep10_1shots/nctx5_cscFalse_ctpend/seed1"
    proc = subprocess.Popen([sys.executable, GRID, "--data", demo_root, *spec], cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert _wait_for(run / "prompt_learner" / "checkpoint", proc), \
            "the run ended before its first checkpoint"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the grid and its train.py, as a crash would
        except ProcessLookupError:
            pass
        proc.wait()
    assert not (run / "results.json").exists()
    resumed = grid(*spec, cwd=work, data=demo_root)
    assert "(resume)" in resumed.stdout
    assert "1 done, 0 skipped, 0 failed" in resumed.stdout
    with open(run / "grid.log") as f:
        assert "resuming at epoch" in f.read()
    assert results(work / "output") == results(control / "output")
    # TRAIN.CHECKPOINT_KEEP 1: only the last epoch's checkpoint is kept
    assert sorted(f for f in os.listdir(run / "prompt_learner")
                  if f.startswith("model.pth.tar-")) == ["model.pth.tar-150"]


def test_a_failing_run_does_not_stop_the_grid(demo_root, tmp_path):
    # a CoOp setting that fails when the model is built; the zero-shot run still runs
    proc = grid("--methods", "coop", "zsclip", "--datasets", "demo", "--shots", "1", "--seeds",
                "1", "--workers", "2", "--opts", "TRAINER.COOP.CLASS_TOKEN_POSITION", "bogus",
                cwd=tmp_path, data=demo_root, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 done, 0 skipped, 1 failed" in proc.stdout
    bad = "output/demo/CoOp/tiny_vit_ep10_1shots/nctx5_cscFalse_ctpend/seed1"
    assert f"failed: {bad} (exit 2); log: {bad}/grid.log" in proc.stdout
    with open(tmp_path / bad / "grid.log") as f:
        assert "error: " in f.read()
    # with 2 workers nothing is echoed: the run's own error line is in the grid's output
    shown = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith("error: ")]
    assert shown and "class token position" in shown[0] and "bogus" in shown[0], proc.stdout
    assert (tmp_path / "output/demo/ZeroshotCLIP/tiny_vit_0shots/task/seed1/results.json").exists()


def test_gpus_give_each_run_its_own_cuda_visible_devices(tmp_path, monkeypatch):
    """--gpus 3,5: one run at a time per listed GPU, CUDA_VISIBLE_DEVICES set per run
    (a stand-in interpreter records it; no GPU needed)."""
    from tools import grid as g

    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\n"
                    "out=$3\n"  # $0 train.py --output-dir OUT ...
                    "echo \"$CUDA_VISIBLE_DEVICES $(date +%s.%N)\" > \"$out/start\"\n"
                    "sleep 1\n"
                    "echo \"$(date +%s.%N)\" > \"$out/end\"\n")
    fake.chmod(0o755)
    runs = [g.Run(str(tmp_path / f"run{i}"), "CoOp", [], "demo", 1, i, "tiny_vit", "coop",
                  digest="x", action="run") for i in range(4)]
    g.run_local(runs, gpus=["3", "5"], python=str(fake), echo=False)
    assert [r.status for r in runs] == ["done"] * 4
    spans = {"3": [], "5": []}
    for r in runs:
        gpu, start = open(osp.join(r.out, "start")).read().split()
        spans[gpu].append((float(start), float(open(osp.join(r.out, "end")).read())))
    assert len(spans["3"]) == len(spans["5"]) == 2  # both GPUs used, one run each at a time
    for gpu, s in spans.items():
        (a0, a1), (b0, b1) = sorted(s)
        assert a1 <= b0, f"two runs at once on GPU {gpu}"
    # ids index the GPUs this process sees (CUDA_VISIBLE_DEVICES of the parent)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert g.visible_gpus(["0", "2"]) == ["4", "6"]
    with pytest.raises(g.UserError, match="GPU 4 is not there"):
        g.visible_gpus(["1", "4"])


@pytest.mark.parametrize("argv,message", [
    (["--methods", "nosuch", "--datasets", "demo"], "unknown method 'nosuch'"),
    (["--methods", "softcpt:XYZ", "--datasets", "demo"], "unknown variant 'XYZ'"),
    (["--methods", "coop", "--datasets", "nosuch"], "no dataset config"),
    (["--methods", "coop", "--datasets", "demo", "--backbones", "vit_zz"],
     "vit_zz"),
    (["--methods", "coop", "--datasets", "demo", "--opts", "OPTIM.NOPE", "1"],
     "unknown config key 'OPTIM.NOPE'"),
    (["--methods", "coop", "--datasets", "demo", "--gpus", "0,97"], "is not there"),
    (["--methods", "coop", "--datasets", "demo", "--executor", "slurm"],
     "EXECUTOR=slurm needs SLURM"),
])
def test_bad_grid_stops_before_anything_runs(demo_root, tmp_path, argv, message):
    env = {"CUDA_VISIBLE_DEVICES": ""}
    if "slurm" in argv:  # a machine without SLURM: no sbatch/sinfo on PATH
        env["PATH"] = osp.dirname(sys.executable)
    proc = grid(*argv, cwd=tmp_path, data=demo_root, check=False, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "output").exists()


def test_grid_yaml_expands_like_the_scripts(tmp_path, demo_root):
    (tmp_path / "g.yaml").write_text(
        "methods: {coop: [default, 8-True-front], coop_mt: [shared], zsclip: null}\n"
        "datasets: [demo]\nshots: [1, 4]\nseeds: [1, 2]\nopts: {OPTIM.MAX_EPOCH: 2}\n")
    proc = grid("--config", str(tmp_path / "g.yaml"), "--dry-run", cwd=tmp_path, data=demo_root)
    outs = [ln.split("--output-dir ")[1].split()[0] for ln in proc.stdout.splitlines()
            if ln.startswith("[run] ")]
    # zero-shot: one run (0 shots, the first seed) whatever the shots
    assert "output/demo/ZeroshotCLIP/tiny_vit_0shots/task/seed1" in outs
    assert "output/demo/CoOp/tiny_vit_ep10_4shots/nctx8_cscTrue_ctpfront/seed2" in outs
    assert "output/demo/CoOpMT/tiny_vit_ep10_1shots/shared/seed1" in outs
    assert len(outs) == 2 * 2 * 3 + 1
    assert not (tmp_path / "output").exists()


def test_scripts_run_their_seeds_through_the_grid(tmp_path, demo_root):
    """WORKERS=2 runs a method script's seeds at once, OPTS reaches train.py, and the
    script ends with the mean +- std table."""
    env = {**os.environ, "DATA": demo_root, "SEEDS": "1 2", "WORKERS": "2",
           "OPTS": "OPTIM.MAX_EPOCH 1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", osp.join(ROOT, "scripts/kgcoop/main.sh"), "demo", "1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[run 2 of 2]" in proc.stdout
    assert "## output/demo/KgCoOp/tiny_vit_ep10_1shots/w8 (seeds 1, 2)" in proc.stdout
    for seed in (1, 2):
        with open(tmp_path / f"output/demo/KgCoOp/tiny_vit_ep10_1shots/w8/seed{seed}/"
                  "results.json") as f:
            assert json.load(f)["epoch"] == 1


@pytest.mark.slurm
def test_slurm_executor_runs_a_demo_grid(demo_root, tmp_path):
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        pytest.skip("SLURM is not installed here (no sinfo/sbatch on PATH); start one with "
                    "shared/slurm/start-local-slurm.sh")
    try:  # installed but stopped: sinfo fails, or waits on the controller
        up = subprocess.run(["sinfo"], capture_output=True, timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        up = False
    if not up:
        pytest.skip("sinfo finds no running SLURM controller")
    bindir = osp.dirname(sys.executable)
    partition = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True,
                               text=True).stdout.split()[0]
    proc = grid(*SMALL, "--executor", "slurm", "--slurm-cpus", "1", "--slurm-time", "20",
                "--slurm-partition", partition, "--slurm-mem", "1",
                "--slurm-extra", "comment=grid-test", "--python", "python", cwd=tmp_path,
                data=demo_root, timeout=1200, env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    print(proc.stdout)
    assert "Submitted 4 runs as SLURM job array" in proc.stdout
    assert "4 done, 0 skipped, 0 failed" in proc.stdout
    found = results(tmp_path / "output")
    assert len(found) == 4
    for run in found:
        logs = [f for f in os.listdir(tmp_path / "output" / run) if f.startswith("slurm-")]
        assert logs, f"no SLURM log beside {run}"
        with open(tmp_path / "output" / run / logs[0]) as f:
            text = f.read()
        # the job ran the grid's interpreter by its absolute path (the one with torch),
        # not whatever 'python' the job's PATH finds
        assert text.split("\n", 1)[0].split()[2] == osp.join(bindir, "python"), text[:300]
        assert "Finish training" in text
    # the options reached sbatch
    scripts = [osp.join(d, f) for d, _, fs in os.walk(tmp_path / "output/.grid/slurm")
               for f in fs if f.endswith("_submission.sh")]
    assert len(scripts) == 1, scripts
    with open(scripts[0]) as f:
        sbatch = f.read()
    for option in (f"--partition={partition}", "--cpus-per-task=1", "--time=20", "--mem=1GB",
                   "--comment=grid-test", "--array=0-3"):
        assert f"#SBATCH {option}" in sbatch, (option, sbatch)
    # a second call finds them finished: nothing is submitted
    again = grid(*SMALL, "--executor", "slurm", cwd=tmp_path, data=demo_root)
    assert "0 done, 4 skipped, 0 failed" in again.stdout
    assert "Submitted" not in again.stdout
    # the grid stopped (killed) while its job runs: a new call does not submit that run
    # again (two jobs in one folder) but leaves it to the job
    long = ["--methods", "coop", "--datasets", "demo", "--shots", "1", "--seeds", "3",
            "--opts", "OPTIM.MAX_EPOCH", "100000", "--executor", "slurm", "--slurm-cpus", "1"]
    first = subprocess.Popen([sys.executable, GRID, "--data", demo_root, *long], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    array = None
    try:
        for line in first.stdout:
            if line.startswith("Submitted"):
                array = line.split("job array ")[1].split()[0]
                break
        assert array, "the grid submitted nothing"
        first.kill()
        first.wait()
        second = grid(*long, cwd=tmp_path, data=demo_root)
        print(second.stdout)
        assert "1 still running as SLURM jobs of an earlier call (left alone)" in second.stdout
        assert f"(SLURM job {array}" in second.stdout
        assert "Submitted" not in second.stdout
        assert "0 done, 0 skipped, 0 failed, 1 still running in SLURM" in second.stdout
    finally:
        first.kill()
        if array:
            subprocess.run(["scancel", array])
