"""The run folder: its layout, its results.json, and the one answer to "does this
folder hold this config's run?".

One run is one train.py command and one output folder, identified by its config
digest (toolbox/config.py). Everything that names, reads or judges a run folder
uses this module: train.py (refusing a folder of another run before writing
anything), the trainer (writing results.json), the grid runner (skip, resume or
move aside), and the result tables (reading results.json).

Few-shot layout (scripts/main.sh, tools/grid.py):
    <root>/<dataset>/<Trainer>/<config>_<shots>shots/<variant>/seed<S>/
A run folder is one seed; an experiment is its parent (all seeds of one setting).
It holds config.yaml, log.txt, results.json when finished, <model>/checkpoint
pointers while training, and the grid's record .grid-run.json (its digest and
command, and its SLURM job) from the moment the grid starts it.
"""
import datetime
import glob
import json
import math
import os
import os.path as osp
import re
import tempfile

from yacs.config import CfgNode as CN

from .config import canonical_backbone, config_diff, config_digest
from .errors import UserError
from .utils import atomic_write, mkdir_if_missing, read_json, write_json

RESULTS = "results.json"
RECORD = ".grid-run.json"  # the grid's note of the run it started in this folder
GRID_LOG = "grid.log"  # the run's stdout + stderr when the grid runs it
SEED_DIR = re.compile(r"^seed(\d+)$")
SETTING_DIR = re.compile(r"^(?P<config>.+)_(?P<shots>-?\d+)shots$")


# ---- layout --------------------------------------------------------------------

def run_dir(root, dataset, trainer, config, shots, variant, seed):
    """The folder of a few-shot run."""
    return osp.join(root, dataset, trainer, f"{config}_{shots}shots", variant, f"seed{seed}")


def describe(experiment):
    """dataset, trainer, config, shots, variant of a standard experiment path
    (None values where the path does not follow the layout)."""
    parts = experiment.split(osp.sep)
    info = dict(dataset=None, trainer=None, config=None, shots=None, variant=None)
    if len(parts) >= 4:
        match = SETTING_DIR.match(parts[-2])
        if match:
            info.update(dataset=osp.join(*parts[:-3]), trainer=parts[-3],
                        config=match.group("config"), shots=int(match.group("shots")),
                        variant=parts[-1])
    return info


# ---- results.json --------------------------------------------------------------

ALL_IMAGES = -1  # results.json "shots" of a run trained on every training image


def results_shots(num_shots, zero_shot):
    """results.json's "shots": DATASET.NUM_SHOTS, except that NUM_SHOTS 0 (or less:
    all images) of a trainer that learns from the training split is ALL_IMAGES, so
    that tables never show such a run as zero-shot (0)."""
    if num_shots <= 0:
        return 0 if zero_shot else ALL_IMAGES
    return int(num_shots)


def shots_text(num_shots, zero_shot):
    """'16 shots', 'all training images' or '0 shots (zero-shot)' for logs."""
    shots = results_shots(num_shots, zero_shot)
    if shots == ALL_IMAGES:
        return "all training images"
    return f"{shots} shots" + (" (zero-shot)" if zero_shot else "")


def write_results(out, data):
    """Write ``data`` as ``out``/results.json (atomically)."""
    write_json(data, osp.join(out, RESULTS))


def read_results(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path} ({type(e).__name__}); delete the run folder and "
                        "run it again") from None
    problem = results_shape_problem(data)
    if problem:
        raise UserError(f"{path} is not a results.json written by train.py ({problem}); delete "
                        "it and run again")
    bad = [k for k, v in [("overall", data["overall"])] +
           [(t["task"], t["value"]) for t in data["tasks"]] if not math.isfinite(v)]
    if bad:  # tables would show 'nan ± nan'
        raise UserError(f"{path} holds a NaN or infinite accuracy ({', '.join(bad[:3])}); that "
                        "run's evaluation failed: delete its folder and run it again")
    return data


def _number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def results_shape_problem(data):
    """What is wrong with the shape of a parsed results.json ('' if nothing):
    an object with a number 'overall' and a list 'tasks' of objects with a
    string 'task' and 'metric' and a number 'value'."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    if "overall" not in data or "tasks" not in data:
        return "no 'overall'/'tasks'"
    if not _number(data["overall"]):
        return "'overall' is not a number"
    if not isinstance(data["tasks"], list):
        return "'tasks' is not a list"
    for t in data["tasks"]:
        if not (isinstance(t, dict) and isinstance(t.get("task"), str)
                and isinstance(t.get("metric"), str) and _number(t.get("value"))):
            return "an entry of 'tasks' is not {task, metric, value}"
    if "seed" in data and not isinstance(data["seed"], int):
        return "'seed' is not an integer"
    return ""


def recorded_digest(out):
    """The config digest recorded in a run folder: its results.json, else its
    newest checkpoint, else the grid's record of the run it started; None when
    the folder records none."""
    path = osp.join(out, RESULTS)
    if osp.isfile(path):
        try:
            return read_json(path).get("config_digest")
        except (OSError, ValueError, AttributeError):
            return None
    saved = saved_run(out, include_results=False)
    if saved is not None and saved["digest"] is not None:
        return saved["digest"]
    return read_record(out).get("config_digest")


# ---- does this folder hold this config's run? ---------------------------------------

def find_checkpoints(directory):
    """{model name: checkpoint file} for the ``<directory>/<model>/checkpoint``
    pointers of a saved run (empty when it holds none)."""
    out = {}
    for ptr in sorted(glob.glob(osp.join(glob.escape(directory), "*", "checkpoint"))):
        try:
            with open(ptr) as f:
                fname = f.readline().strip()
        except OSError:
            continue
        if fname:
            out[osp.basename(osp.dirname(ptr))] = osp.join(osp.dirname(ptr), fname)
    return out


def saved_run(directory, include_results=True):
    """What ``directory`` holds of a run: dict(what, digest, config) read from
    its newest checkpoint, else from its results.json (``include_results``);
    None if neither."""
    from .utils import load_checkpoint  # (torch: only for a folder with checkpoints)

    for name, path in find_checkpoints(directory).items():
        if osp.exists(path):
            ckpt = load_checkpoint(path)
            return dict(what=f"checkpoint {name}/{osp.basename(path)}",
                        digest=ckpt.get("config_digest"), config=ckpt.get("config"))
    results = osp.join(directory, RESULTS)
    if include_results and osp.exists(results):
        try:
            digest = read_json(results).get("config_digest")
        except (OSError, ValueError, AttributeError):
            digest = None
        return dict(what="results.json", digest=digest, config=_config_of(directory, digest))
    return None


def _config_of(directory, digest):
    """The config dump in ``directory``/config.yaml (written by the training
    run) when it is the config of ``digest``, else None."""
    path = osp.join(directory, "config.yaml")
    if digest is None or not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            text = f.read()
        if config_digest(CN.load_cfg(text)) == digest:
            return text
    except Exception:  # an unreadable or foreign config.yaml names no keys
        pass
    return None


def saved_backbone(ckpt):
    """The canonical backbone of the config a checkpoint records (None if none)."""
    try:
        return canonical_backbone(CN.load_cfg(ckpt["config"])) or None
    except Exception:  # no config recorded (older checkpoints) or an unreadable one
        return None


def _differences(saved, cfg):
    """'KEY A there, B here; ...' for up to 4 keys where the saved run's
    config differs from ``cfg``; '' when the saved config is unknown."""
    diff = config_diff(saved["config"], cfg) if saved.get("config") else []
    shown = "; ".join(f"{k} {a} there, {b} here" for k, a, b in diff[:4])
    return shown + (f"; {len(diff) - 4} more" if len(diff) > 4 else "")


def check_run_folder(cfg, eval_only=False, bare_resume=False, check_lock=True):
    """Refuse, before anything is written, a run that would mix with another.

    The output folder must be writable and must not hold another config's run
    (checkpoints or results.json with another config digest): training there
    would resume that run, or write its results under this config's labels.
    With RESUME, the folder to resume from must exist, hold checkpoints, and
    those must have been written with this config (up to the keys that
    ``config_digest`` leaves out). A bare ``--resume`` (``bare_resume``: no
    folder given, so the output folder) of a run stopped before its first
    checkpoint starts from scratch; a folder given explicitly must hold
    checkpoints, even when it is the output folder.
    """
    out = cfg.OUTPUT_DIR
    # (check_lock False: a torchrun rank other than 0, whose rank 0 holds the lock)
    pid = folder_in_use(out) if out and not eval_only and check_lock else None
    if pid is not None:  # (before its changing checkpoints are read)
        raise UserError(f"output folder {out} is in use by another run (process {pid}); wait "
                        "for it to end or stop it, then run again")
    digest = config_digest(cfg)
    resume = "" if eval_only else cfg.RESUME
    own = bool(resume) and osp.abspath(resume) == osp.abspath(out)
    checked = False  # the output folder's checkpoints checked as the folder to resume
    if resume and own and bare_resume and not find_checkpoints(resume):
        # a bare --resume of a run stopped before its first checkpoint (tools/grid.py)
        print(f"Nothing to resume in {out} (no checkpoint yet): training from scratch")
    elif resume:
        if not osp.isdir(resume):
            raise UserError(f"--resume: folder not found: {resume}; give the output folder of "
                            "the run to continue, or drop --resume to train from scratch")
        found = find_checkpoints(resume)
        if not found:
            raise UserError(f"--resume: no checkpoint in {resume} (no <model>/checkpoint file); "
                            "drop --resume to train from scratch")
        for name, path in found.items():
            if not osp.isfile(path):  # a pointer whose file was deleted or never landed
                others = sorted((f for f in os.listdir(osp.dirname(path))
                                 if f.startswith("model") and ".pth" in f),
                                key=lambda f: (len(f), f))
                instead = (f"write the name of one that exists ({', '.join(others[-2:])}) "
                           "into it" if others else "delete the pointer")
                raise UserError(f"--resume: {osp.join(resume, name, 'checkpoint')} names "
                                f"{osp.basename(path)}, which is missing; put that file back, "
                                f"{instead}, or drop --resume and give a new --output-dir")
        saved = saved_run(resume)
        if saved["digest"] is None:
            print(f"Note: the checkpoints in {resume} do not record their config; resuming as "
                  "asked")
        elif saved["digest"] != digest:
            diff = _differences(saved, cfg)
            raise UserError(f"--resume {resume}: its checkpoints were written with another "
                            f"config{f' ({diff})' if diff else ''}; resume with the config it was "
                            "trained with, or drop --resume and give a new --output-dir")
        checked = own
    saved = None if checked else saved_run(out)
    if saved is not None and saved["digest"] != digest:
        what = ("a run whose config is not recorded" if saved["digest"] is None
                else "a run of another config")
        diff = _differences(saved, cfg)
        raise UserError(f"output folder {out} holds {what} ({saved['what']}"
                        f"{': ' + diff if diff else ''}); pass a new --output-dir, or continue that "
                        f"run with its own config and --resume {out}")
    try:
        mkdir_if_missing(out)
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=out)
        os.close(fd)
        if osp.exists(probe):  # (another DDP rank may have cleaned it up already)
            os.remove(probe)
    except OSError as e:
        raise UserError(f"cannot write to output folder {out} ({e.strerror or type(e).__name__}); "
                        "choose a writable --output-dir") from None


def remove_temp_files(directory):
    """Delete ``.tmp-*`` files (atomic writes a crash interrupted) in a run's
    folder and its model folders."""
    pattern = osp.join(glob.escape(directory), ".tmp-*")
    for path in glob.glob(pattern) + glob.glob(osp.join(glob.escape(directory), "*", ".tmp-*")):
        try:
            os.remove(path)
            print(f"Removed {path} (left by an interrupted run)")
        except OSError:
            pass



def folder_state(out, digest):
    """What ``out`` holds for a run of config ``digest``: "absent" (no folder),
    "finished" (its results.json), "unfinished" (checkpoints or the grid's record of
    it, or an empty folder), or "other" (a run of another config, finished or not:
    results, checkpoints or record with another digest, or results.json without one)."""
    if not osp.isdir(out):
        return "absent"
    found = recorded_digest(out)
    if osp.isfile(osp.join(out, RESULTS)):
        return "finished" if found == digest else "other"
    if found is not None and found != digest:
        return "other"
    return "unfinished"


def move_aside(out):
    """Rename OUT to a hidden sibling .NAME.old-<time> (never deleted; hidden, so the
    result tables do not read it); return the new path."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    parent, name = osp.split(out.rstrip("/"))
    dest = osp.join(parent, f".{name}.old-{stamp}")
    n = 1
    while osp.exists(dest):
        n += 1
        dest = osp.join(parent, f".{name}.old-{stamp}-{n}")
    os.rename(out, dest)
    return dest


def write_record(out, digest, command, **extra):
    """Note the run's digest and command in its folder before the grid starts it, so
    an interrupted run is recognised (and a changed config is not resumed); ``extra``:
    e.g. the SLURM job that runs it, so a later call leaves a running job alone."""
    os.makedirs(out, exist_ok=True)
    rec = dict(config_digest=digest, command=command, **extra)
    atomic_write(osp.join(out, RECORD), lambda f: f.write(json.dumps(rec, indent=1)))


def read_record(out):
    """The grid's record of a run folder ({} when there is none or it is unreadable)."""
    try:
        with open(osp.join(out, RECORD)) as f:
            rec = json.load(f)
        return rec if isinstance(rec, dict) else {}
    except (OSError, ValueError):
        return {}


# ---- one owner at a time ---------------------------------------------------------

LOCK = ".run.lock"
_HELD = {}  # run folder -> open lock file (held until the process ends)


def lock_run_folder(out):
    """Take the run folder for this process (an exclusive lock on <out>/.run.lock, held
    until the process ends, and released by the system however it ends); a UserError
    when another live process holds it (a run still training there, e.g. an orphan of
    a stopped grid)."""
    import fcntl

    if not out or out in _HELD:
        return
    os.makedirs(out, exist_ok=True)
    f = open(osp.join(out, LOCK), "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise UserError(f"output folder {out} is in use by another run (process {pid}); wait "
                        "for it to end or stop it, then run again") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    _HELD[out] = f


def folder_in_use(out):
    """The pid (as written) of a live process holding ``out``'s lock, else None."""
    import fcntl

    path = osp.join(out, LOCK)
    if out in _HELD or not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                return f.read().strip() or "?"
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    except OSError:
        return None
    return None
