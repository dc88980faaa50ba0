"""Executors of a grid's runs: local (K runs at once on CPU workers, or one at a
time on each listed GPU) and SLURM (one submitit job array), with progress lines
('[i/N finished] ... ETA') as runs end. A run is its train.py command; its output
goes to the run folder (grid.log, or the SLURM job's log).
"""
import datetime
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from toolbox.errors import UserError
from toolbox.run_folder import write_record


def record(r, **extra):
    """The grid's record of run ``r`` in its folder (toolbox/run_folder.py)."""
    write_record(r.out, r.digest, r.command(python="python"), **extra)


SLURM_ACTIVE = "PENDING,RUNNING,CONFIGURING,COMPLETING,SUSPENDED,REQUEUED,RESIZING"


def slurm_job_active(job_id):
    """True when SLURM (squeue) still has JOB_ID (e.g. 123_4) pending or running."""
    if shutil.which("squeue") is None:
        return False
    try:
        proc = subprocess.run(["squeue", "-h", "-j", str(job_id), "-t", SLURM_ACTIVE, "-o",
                               "%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())




def fmt_time(seconds):
    return str(datetime.timedelta(seconds=int(round(seconds))))


class Progress:
    """Prints '[i/N] <status> <out> (<time>), ETA <h:mm:ss>' as runs end."""

    def __init__(self, total, parallel):
        self.total, self.parallel = total, max(1, parallel)
        self.finished, self.ran_seconds, self.ran = 0, 0.0, 0
        self.start = time.time()
        self.lock = threading.Lock()

    def eta(self):
        left = self.total - self.finished
        if self.ran == 0 or left == 0:
            return "?" if left else "0:00:00"
        return fmt_time(self.ran_seconds / self.ran * left / self.parallel)

    def starting(self, r, index):
        with self.lock:
            print(f"[run {index} of {self.total}] {r.method} {r.out} "
                  f"({'resume' if r.action == 'resume' else 'start'}), ETA {self.eta()}",
                  flush=True)

    def ended(self, r):
        with self.lock:
            self.finished += 1
            if r.status != "skipped":
                self.ran += 1
                self.ran_seconds += r.seconds
            extra, why = "", ""
            if r.status == "failed":
                extra = f" (exit {r.rc}, log {r.log})"
                why = error_line(r.log)
            print(f"[{self.finished}/{self.total} finished] {r.status} {r.out} in "
                  f"{fmt_time(r.seconds)}{extra}; elapsed {fmt_time(time.time() - self.start)}, "
                  f"ETA {self.eta()}" + (f"\n    {why}" if why else ""), flush=True)


_LIVE = set()  # the train.py processes this grid started and that still run
_LIVE_LOCK = threading.Lock()


def stop_children(grace=20):
    """Stop every train.py this grid started (SIGTERM, then SIGKILL after ``grace``
    seconds): a stopped grid leaves no orphan training into its folders."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_process(cmd, log_path, env=None, echo=False):
    """Run CMD with stdout+stderr appended to LOG_PATH (and echoed when asked);
    return its exit code."""
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    with open(log_path, "a", buffering=1) as log:
        log.write(f"# {datetime.datetime.now().isoformat(timespec='seconds')} "
                  f"{' '.join(shlex.quote(c) for c in cmd)}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, text=True, bufsize=1)
        with _LIVE_LOCK:
            _LIVE.add(proc)
        try:
            for line in proc.stdout:
                log.write(line)
                if echo:
                    sys.stdout.write(line)
                    sys.stdout.flush()
            return proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)


def error_line(log_path):
    """The last 'error: ...' line of a run's log (else its last line), for the grid's
    own output: the reason a run failed, whatever the number of workers."""
    try:
        with open(log_path, errors="replace") as f:
            lines = [x.rstrip("\n") for x in f.readlines()[-200:] if x.strip()]
    except OSError:
        return ""
    errors = [x for x in lines if x.startswith("error: ")]
    return errors[-1] if errors else (lines[-1] if lines else "")


def visible_gpus(requested):
    """Map --gpus ids (indices into the GPUs this process sees) to CUDA_VISIBLE_DEVICES
    values; an id that is not there is a UserError."""
    try:
        import torch
        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        count = 0
    parent = os.environ.get("CUDA_VISIBLE_DEVICES")
    parent_ids = [x for x in parent.split(",") if x] if parent else None
    out = []
    for g in requested:
        if not re.fullmatch(r"\d+", g):
            raise UserError(f"--gpus takes GPU indices like 0,1,2, got '{g}'")
        if int(g) >= count:
            raise UserError(f"GPU {g} is not there: this machine shows {count} CUDA "
                            f"GPU(s){' (ids 0-%d)' % (count - 1) if count else ''}; check --gpus"
                            " / GPUS and nvidia-smi")
        out.append(parent_ids[int(g)] if parent_ids else g)
    return out


def run_local(runs, workers=1, gpus=None, python=None, echo=None):
    """Run RUNS (actions run/resume/redo) with up to K at once; GPUS gives one slot per
    entry (CUDA_VISIBLE_DEVICES set per run)."""
    slots = list(gpus) if gpus else [None] * max(1, workers)
    echo = len(slots) == 1 if echo is None else echo
    progress = Progress(len(runs), len(slots))
    free = list(range(len(slots)))
    lock = threading.Lock()

    def one(r, index):
        with lock:
            slot = free.pop(0)
        env = dict(os.environ)
        if slots[slot] is not None:
            env["CUDA_VISIBLE_DEVICES"] = slots[slot]
        elif not gpus and len(slots) > 1:
            # K CPU workers share the cores: one thread each unless told otherwise
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(slots))))
        t0 = time.time()
        try:
            record(r)
            progress.starting(r, index)
            r.rc = run_process(r.command(python, resume=r.action == "resume"), r.log, env, echo)
        except OSError as e:
            print(f"error starting {r.out}: {e}", file=sys.stderr)
            r.rc = -1
        finally:
            with lock:
                free.append(slot)
        r.seconds = time.time() - t0
        r.status = "done" if r.rc == 0 else "failed"
        progress.ended(r)
        return r

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        pending = {pool.submit(one, r, i + 1) for i, r in enumerate(runs)}
        try:
            while pending:
                _, pending = wait(pending, return_when=FIRST_COMPLETED)
        except BaseException:  # Ctrl-C, SIGTERM: stop the runs, then the threads end
            for f in pending:
                f.cancel()
            stop_children()
            raise
    return runs


class SlurmJob:
    """What one array task runs: train.py for one run, its output in the run's
    folder as slurm-<array job>_<task>.log (picklable, importable by submitit)."""

    def __init__(self, cmd, out):
        self.cmd, self.out = cmd, out

    def __call__(self):
        job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "local")
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        name = f"slurm-{job}_{task}.log" if task is not None else f"slurm-{job}.log"
        rc = run_process(self.cmd, osp.join(self.out, name))
        if rc != 0:
            raise RuntimeError(f"train.py exited with {rc}; see {osp.join(self.out, name)}")
        return rc


def check_slurm():
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise UserError("EXECUTOR=slurm needs SLURM (sbatch/sinfo not found on PATH); run on a "
                        "SLURM login node, or use the local executor (WORKERS / GPUS)")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UserError("EXECUTOR=slurm needs submitit: pip install -r requirements.txt") \
            from None


def run_slurm(runs, args, python=None):
    """Submit RUNS as one submitit job array and wait for them."""
    import submitit

    folder = osp.join(args.output_root, ".grid", "slurm")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params = dict(timeout_min=args.slurm_time, cpus_per_task=args.slurm_cpus,
                  slurm_array_parallelism=args.slurm_parallel or len(runs),
                  name="grid")
    if args.slurm_partition:
        params["slurm_partition"] = args.slurm_partition
    if args.slurm_gpus:
        params["gpus_per_node"] = args.slurm_gpus
    if args.slurm_mem:
        params["mem_gb"] = args.slurm_mem
    extra = {}
    for item in args.slurm_extra or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--slurm-extra takes KEY=VALUE sbatch options, got '{item}'")
        extra[key.lstrip("-").replace("-", "_")] = value
    if extra:
        params["slurm_additional_parameters"] = extra
    executor.update_parameters(**params)
    fns = []
    for r in runs:
        record(r)
        fns.append(SlurmJob(r.command(python, resume=r.action == "resume"), r.out))
    t0 = time.time()
    with executor.batch():
        jobs = [executor.submit(fn) for fn in fns]
    array = jobs[0].job_id.split('_')[0]
    for r, job in zip(runs, jobs):
        record(r, slurm_job=job.job_id)
    print(f"Submitted {len(jobs)} runs as SLURM job array {array} "
          f"(submitit logs in {folder})", flush=True)
    progress = Progress(len(runs), args.slurm_parallel or len(runs))
    left = dict(zip(range(len(jobs)), jobs))
    try:
        _wait_slurm(runs, left, progress, t0)
    except KeyboardInterrupt:
        print(f"Interrupted: the {len(left)} unfinished runs of SLURM job array {array} keep "
              f"running (scancel {array} stops them); the same command later skips the "
              "finished runs, leaves running ones alone and resumes the others",
              file=sys.stderr)
        raise
    return runs


def _wait_slurm(runs, left, progress, t0):
    while left:
        for i, job in list(left.items()):
            if job.done():
                r = runs[i]
                r.seconds = time.time() - t0
                try:
                    job.result()
                    r.rc, r.status = 0, "done"
                except Exception:  # noqa: BLE001  (the job failed; its log says why)
                    r.rc, r.status = 1, "failed"
                logs = sorted(f for f in os.listdir(r.out) if f.startswith("slurm-"))
                if logs:
                    r.log_file = osp.join(r.out, logs[-1])
                progress.ended(r)
                del left[i]
        if left:
            time.sleep(2)

