"""Run a grid of train.py runs: methods x variants x datasets x shots x seeds x
backbones, locally with K at once (CPU workers or one run per listed GPU) or on
a SLURM cluster (submitit job array).

    python tools/grid.py --methods softcpt:NATA,CATA coop coop_mt:shared,task \\
        --datasets demo --shots 1 4 --seeds 1 2 --workers 2
    python tools/grid.py --config grid.yaml --gpus 0,1,2,3
    python tools/grid.py --config grid.yaml --executor slurm --slurm-partition gpu \\
        --slurm-time 240 --slurm-gpus 1 --slurm-cpus 8 --slurm-mem 32

Every run is exactly the train.py command and output folder of the method's
scripts/<method>/main.sh (output/<dataset>/<Trainer>/<config>_<shots>shots/<variant>/seed<S>),
so tools/compare.py and tools/parse_results.py read the results unchanged. A run whose
results.json holds the same config digest is skipped; one whose digest differs is moved
aside to a hidden sibling folder (.seed<S>.old-<time>, never deleted) and run again; an
interrupted run (folder without results.json) resumes from its last checkpoint
(train.py --resume). A failing run does not stop the others.

The grid YAML (--config) holds the same fields as the flags; flags given win:

    methods: {softcpt: [NATA, CATA], coop: [default], coop_mt: [shared, task]}
    datasets: [demo]
    shots: [1, 4]
    seeds: [1, 2, 3]
    backbones: [tiny_vit]          # default: tiny_vit for demo datasets, rn50 otherwise
    opts: {OPTIM.MAX_EPOCH: 2}     # extra KEY VALUE overrides for every run
"""
import argparse
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
from collections import OrderedDict
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from toolbox.errors import UserError, one_line  # noqa: E402

CONFIGS = osp.join(ROOT, "configs")
LOG_NAME = "grid.log"  # each run's stdout + stderr, inside its output folder


# ---------------------------------------------------------------------------
# Methods: what scripts/<method>/main.sh runs for (dataset, shots, backbone, variant)
# ---------------------------------------------------------------------------

def is_tiny(backbone):
    from trainers import backbones as bb
    try:
        return bb.get_backbone(backbone).family == "tiny"
    except UserError:
        return backbone.startswith("tiny_")


def canonical_backbone(name):
    """The registered name of a backbone or alias (trainers/backbones.py); an unknown
    name is a UserError listing the registered ones."""
    from trainers import backbones as bb
    return bb.canonical_name(name)


def default_backbone(dataset):
    """The backbone a script uses when none is given (scripts/common.sh)."""
    return "tiny_vit" if dataset == "demo" or dataset.startswith("demo_") else "rn50"


def is_suite(dataset):
    """A suite's dataset config (several tasks): CoOp then runs 50 epochs."""
    path = osp.join(CONFIGS, "datasets", dataset + ".yaml")
    if not osp.isfile(path):
        return False
    import yaml

    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{path} is not valid YAML ({one_line(e)}); fix that file")
    # the explicit key only: a '# suite' comment (the old marker) no longer counts
    return bool((data.get("DATASET") or {}).get("SUITE", False))


def _config_ctx_init(trainer, cfg_name, dataset=None):
    """CTX_INIT of a trainer config, else of the dataset config (the demo's digit words)."""
    path = osp.join(CONFIGS, "trainers", trainer, cfg_name + ".yaml")
    if osp.isfile(path):
        with open(path) as f:
            m = re.search(r'^\s*CTX_INIT:\s*"(.*)"', f.read(), re.M)
        if m:
            return m.group(1)
    path = osp.join(CONFIGS, "datasets", f"{dataset}.yaml")
    if dataset and osp.isfile(path):
        import yaml

        with open(path) as f:
            group = ((yaml.safe_load(f) or {}).get("TRAINER") or {}).get(trainer.upper()) or {}
        return str(group.get("CTX_INIT", "") or "")
    return ""


@dataclass
class Setting:
    """One method setting: trainer, config name, variant folder and KEY VALUE overrides."""
    trainer: str
    config: str
    variant: str
    opts: list = field(default_factory=list)
    shots: int = None  # None: the grid's shots


class Method:
    name = ""
    trainer = ""
    variants = ()  # allowed variant names (empty: free form, checked by parse_variant)
    default_variant = ""

    def check_variant(self, variant):
        if self.variants and variant not in self.variants:
            raise UserError(f"unknown variant '{variant}' of method {self.name}; choose from "
                            f"{', '.join(self.variants)}")

    def setting(self, dataset, shots, backbone, variant):
        raise NotImplementedError


def _schedule(backbone, real, tiny="ep10"):
    return f"{backbone}_{tiny}" if is_tiny(backbone) else f"{backbone}_{real}"


class CoOp(Method):
    name, trainer, default_variant = "coop", "CoOp", "default"
    doc = ("default (the config's context), or N_CTX[-CSC[-CLASS_TOKEN_POSITION]] (e.g. "
           "16-False-end; N_CTX 'default': the config's) or nctx16_cscFalse_ctpend")

    def parse(self, variant):
        if variant in ("", "default"):
            return None, "False", "end"
        m = re.fullmatch(r"nctx(\d+)_csc(True|False)_ctp(end|middle|front)", variant)
        parts = list(m.groups()) if m else variant.split("-")
        if not (1 <= len(parts) <= 3) or not (parts[0].isdigit() or parts[0] == "default"):
            raise UserError(f"unknown variant '{variant}' of method coop; use {self.doc}")
        nctx, csc, ctp = (parts + ["False", "end"][len(parts) - 1:])[:3]
        nctx = None if nctx == "default" else nctx
        if csc not in ("True", "False") or ctp not in ("end", "middle", "front"):
            raise UserError(f"unknown variant '{variant}' of method coop; use {self.doc}")
        return nctx, csc, ctp

    def check_variant(self, variant):
        self.parse(variant)

    def setting(self, dataset, shots, backbone, variant):
        nctx, csc, ctp = self.parse(variant)
        if is_tiny(backbone):
            cfg = f"{backbone}_ep10"
        elif is_suite(dataset) or shots <= 2:
            cfg = f"{backbone}_ep50"
        elif shots <= 8:
            cfg = f"{backbone}_ep100"
        else:
            cfg = f"{backbone}_ep200"
        # A config's CTX_INIT fixes the context (its words) unless N_CTX is given,
        # which then wins with a random init; the variant folder says which it was.
        ctx_init = _config_ctx_init("CoOp", cfg, dataset)
        if nctx is not None or not ctx_init:
            nctx = nctx or "16"
            opts = ["TRAINER.COOP.N_CTX", nctx, "TRAINER.COOP.CTX_INIT", ""]
        else:
            nctx, opts = str(len(ctx_init.split())), []
        opts += ["TRAINER.COOP.CSC", csc, "TRAINER.COOP.CLASS_TOKEN_POSITION", ctp]
        return Setting("CoOp", cfg, f"nctx{nctx}_csc{csc}_ctp{ctp}", opts)


class CoCoOp(Method):
    name, trainer, variants, default_variant = "cocoop", "CoCoOp", ("nctx4_ctxv1",), "nctx4_ctxv1"

    def setting(self, dataset, shots, backbone, variant):
        return Setting("CoCoOp", f"{backbone}_c4_ep10_batch1_ctxv1", "nctx4_ctxv1")


class CoOpMT(Method):
    name, trainer, variants, default_variant = "coop_mt", "CoOpMT", ("shared", "task", "class"), "task"

    def setting(self, dataset, shots, backbone, variant):
        return Setting("CoOpMT", _schedule(backbone, "ep50"), variant,
                       ["TRAINER.COOP_MT.MODE", variant])


class LinearProbe(Method):
    name, trainer, variants, default_variant = "linear_probe", "LinearProbeCLIP", ("logreg",), "logreg"

    def setting(self, dataset, shots, backbone, variant):
        return Setting("LinearProbeCLIP", backbone, "logreg")


class SoftCPT(Method):
    name, trainer = "softcpt", "SoftCPT"
    variants, default_variant = ("NATA", "NATS", "CATA", "CSTA", "CATS", "CSTS"), "NATA"

    # VARIANT or VARIANT_csr<RATE> (TRAINER.SOFTCPT.CLS_SAMPLE_RATE). The default rate is
    # 0.1 for the class-aware variants on general10 (upstream's README), 0 otherwise; the
    # folder names the rate only when it is not the default.
    PATTERN = re.compile(r"(NATA|NATS|CATA|CSTA|CATS|CSTS)(?:_csr(0*\.[0-9]+|[01](?:\.0*)?))?")

    def check_variant(self, variant):
        if not self.PATTERN.fullmatch(variant):
            raise UserError(f"unknown variant '{variant}' of method softcpt; choose from "
                            f"{', '.join(self.variants)}, optionally with _csr<RATE in [0, 1]> "
                            "(class sampling rate)")

    def setting(self, dataset, shots, backbone, variant):
        name, rate = self.PATTERN.fullmatch(variant).groups()
        default = "0.1" if name[:2] in ("CA", "CS") and dataset == "general10" else "0.0"
        rate = rate or default
        if "." not in rate:
            rate += ".0"  # the config key is a float
        folder = name if float(rate) == float(default) else f"{name}_csr{rate}"
        # The paper's 50 epochs for every shot count; the tiny demo backbones use 10.
        return Setting("SoftCPT", _schedule(backbone, "ep50"), folder,
                       ["TRAINER.SOFTCPT.VARIANT", name,
                        "TRAINER.SOFTCPT.CLS_SAMPLE_RATE", rate])


class ZSCLIP(Method):
    name, trainer = "zsclip", "ZeroshotCLIP"
    variants, default_variant = ("task", "task_ensemble", "single", "ensemble"), "task"

    def setting(self, dataset, shots, backbone, variant):
        # Nothing is trained: stored as 0 shots whatever the grid's shots are.
        return Setting("ZeroshotCLIP", backbone, variant, ["TRAINER.ZSCLIP.TEMPLATES", variant],
                       shots=0)


class DualViewMI(Method):
    name, trainer, variants, default_variant = "dualviewmi", "DualViewMI", ("soft", "fused"), "soft"

    def setting(self, dataset, shots, backbone, variant):
        return Setting("DualViewMI", _schedule(backbone, "ep10_batch4"), variant,
                       ["TRAINER.DUALVIEWMI.INFERENCE", variant])


class KgCoOp(Method):
    name, trainer, default_variant = "kgcoop", "KgCoOp", "w8"

    def check_variant(self, variant):
        if not re.fullmatch(r"w\d+(\.\d+)?", variant):
            raise UserError(f"unknown variant '{variant}' of method kgcoop; use w<W> (the weight "
                            "of the knowledge-guided term, e.g. w8)")

    def setting(self, dataset, shots, backbone, variant):
        return Setting("KgCoOp", _schedule(backbone, "ep10_batch4"), variant,
                       ["TRAINER.KGCOOP.W", str(float(variant[1:]))])


METHODS = OrderedDict((m.name, m) for m in (
    ZSCLIP(), LinearProbe(), CoOp(), CoCoOp(), CoOpMT(), SoftCPT(), DualViewMI(), KgCoOp()))


# ---------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------

@dataclass
class Run:
    out: str  # output folder (relative to the working directory, as the scripts write it)
    trainer: str
    argv: list  # train.py arguments without --output-dir / --resume
    dataset: str = ""
    shots: int = 0
    seed: int = 0
    backbone: str = ""
    method: str = ""
    digest: str = ""  # the config digest train.py will write into results.json
    action: str = ""  # skip | run | resume | redo
    status: str = ""  # done | skipped | failed
    seconds: float = 0.0
    rc: int = None

    @property
    def log(self):
        return osp.join(self.out, LOG_NAME)

    def command(self, python=None, resume=False):
        cmd = [python or sys.executable, osp.join(ROOT, "train.py"), "--output-dir", self.out]
        if resume:
            cmd.append("--resume")
        return cmd + self.argv


def _as_list(value):
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return str(value).split()


def parse_methods(entries):
    """['softcpt:NATA,CATA', 'coop'] or {softcpt: [NATA], coop: null} -> [(method, variant)]."""
    pairs = []
    if isinstance(entries, dict):
        items = [(k, _as_list(v) or []) for k, v in entries.items()]
    else:
        items = []
        for e in entries:
            name, _, vs = str(e).partition(":")
            items.append((name, [v for v in vs.split(",") if v]))
    for name, variants in items:
        name = name.strip().lower()
        if name not in METHODS:
            raise UserError(f"unknown method '{name}'; choose from {', '.join(METHODS)}")
        method = METHODS[name]
        for v in variants or [method.default_variant]:
            method.check_variant(v)
            if (name, v) not in pairs:
                pairs.append((name, v))
    return pairs


def _check_int(what, values):
    out = []
    for v in values:
        if not re.fullmatch(r"-?\d+", str(v)):
            raise UserError(f"{what} must be whole numbers, got '{v}'")
        out.append(int(v))
    return out


def expand(spec, data="./data", output_root="output"):
    """The runs of a grid spec (dict of lists), in the order the scripts run them:
    per dataset, backbone, shots, method and variant, the seeds. Duplicates (zero-shot
    runs at several shot counts) appear once."""
    methods = parse_methods(spec.get("methods") or [])
    if not methods:
        raise UserError("no methods in the grid; give --methods (e.g. softcpt coop:default)")
    datasets = _as_list(spec.get("datasets")) or []
    if not datasets:
        raise UserError("no datasets in the grid; give --datasets (names in configs/datasets)")
    available = sorted(f[:-5] for f in os.listdir(osp.join(CONFIGS, "datasets"))
                       if f.endswith(".yaml"))
    for d in datasets:
        if d not in available:
            raise UserError(f"no dataset config configs/datasets/{d}.yaml (unknown dataset "
                            f"'{d}'); available: {' '.join(available)}")
    shots_list = _check_int("shots", _as_list(spec.get("shots")) or ["16"])
    seeds = _check_int("seeds", _as_list(spec.get("seeds")) or ["1", "2", "3"])
    zs_seeds = _check_int("zero-shot seeds", _as_list(spec.get("zs_seeds")) or seeds[:1])
    backbones = _as_list(spec.get("backbones"))
    extra = spec.get("opts") or []
    if isinstance(extra, dict):
        extra = [x for kv in extra.items() for x in kv]
    if isinstance(extra, (list, tuple)) and len(extra) == 1:
        extra = extra[0]  # one string "KEY VALUE ..." (the scripts' OPTS)
    extra = [str(x) for x in (shlex.split(extra) if isinstance(extra, str) else extra)]
    if len(extra) % 2:
        raise UserError(f"opts must be KEY VALUE pairs, got an odd number: {' '.join(extra)}")
    tag = spec.get("tag") or ""
    pretrained, backbone_path = spec.get("pretrained") or "", spec.get("backbone_path") or ""
    from tools.backbones import resolve_config
    from trainers.backbones import RANDOM, get_backbone, open_clip_tags

    def takes_tag(backbone):
        """--pretrained is an OpenCLIP weights tag: it applies to the OpenCLIP backbones
        of the grid ('random', seeded random weights, to every backbone)."""
        return pretrained == RANDOM or get_backbone(backbone).family == "open_clip"

    if pretrained:
        named = [canonical_backbone(b) for b in backbones or
                 [default_backbone(d) for d in datasets]]
        if not any(takes_tag(b) for b in named):
            raise UserError(f"--pretrained '{pretrained}' (PRETRAINED) is an OpenCLIP weights tag, "
                            "but no backbone of the grid is an OpenCLIP model "
                            f"({' '.join(named)}); drop it or give open_clip:<arch> backbones")

    runs, seen = [], set()
    for dataset in datasets:
        dcfg = osp.join(CONFIGS, "datasets", dataset + ".yaml")
        for backbone in backbones or [default_backbone(dataset)]:
            backbone = canonical_backbone(backbone)
            weights_tag = pretrained if pretrained and takes_tag(backbone) else ""
            if get_backbone(backbone).family == "open_clip" and not (
                    weights_tag or backbone_path or "MODEL.BACKBONE.PRETRAINED" in extra
                    or "MODEL.BACKBONE.PATH" in extra):
                tags = open_clip_tags(backbone)
                raise UserError(f"backbone {backbone} needs its weights named: --pretrained <tag> "
                                f"(scripts: PRETRAINED=<tag>; its tags: {tags or 'none'}; or "
                                "'random') or --backbone-path <checkpoint> (BACKBONE_PATH=...)")
            for shots in shots_list:
                for name, variant in methods:
                    s = METHODS[name].setting(dataset, shots, backbone, variant)
                    try:
                        # a backbone without its own config runs the vit_b16/rn50 config of
                        # the same schedule with MODEL.BACKBONE.NAME set (scripts/common.sh)
                        cfg_name, tcfg, override = resolve_config(s.trainer, s.config)
                    except UserError as e:
                        have = sorted(f[:-5] for f in os.listdir(
                            osp.join(CONFIGS, "trainers", s.trainer)) if f.endswith(".yaml"))
                        raise UserError(f"backbone '{backbone}' has no {s.trainer} config for "
                                        f"method {name} ({one_line(e)}); available: "
                                        f"{' '.join(have)}") from None
                    bb_opts = [] if override == "-" else ["MODEL.BACKBONE.NAME", override]
                    if weights_tag:
                        bb_opts += ["MODEL.BACKBONE.PRETRAINED", weights_tag]
                        cfg_name = f"{backbone}@{weights_tag}{cfg_name[len(backbone):]}"
                    if backbone_path:
                        bb_opts += ["MODEL.BACKBONE.PATH", backbone_path]
                    n_shots = shots if s.shots is None else s.shots
                    folder = s.variant + (f"_{tag}" if tag else "")
                    for seed in (zs_seeds if name == "zsclip" else seeds):
                        out = osp.join(output_root, dataset, s.trainer,
                                       f"{cfg_name}_{n_shots}shots", folder, f"seed{seed}")
                        if out in seen:
                            continue
                        seen.add(out)
                        argv = ["--root", data, "--seed", str(seed), "--trainer", s.trainer,
                                "--dataset-config-file", dcfg, "--config-file", tcfg,
                                "DATASET.NUM_SHOTS", str(n_shots)] + bb_opts + s.opts + extra
                        runs.append(Run(out, s.trainer, argv, dataset, n_shots, seed,
                                        backbone + (f"@{weights_tag}" if weights_tag else ""),
                                        name))
    return runs


def compute_digests(runs):
    """The config digest of each run, from the config train.py builds for it; a bad
    config key or value stops the grid here, before anything runs."""
    import warnings
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    import train
    from toolbox.config import config_digest

    for r in runs:
        args = train.get_parser().parse_args(["--output-dir", r.out] + r.argv)
        try:
            r.digest = config_digest(train.setup_cfg(args))
        except UserError as e:
            raise UserError(f"{r.out}: {one_line(e)}") from None


def read_digest(out):
    """The config digest recorded in a run folder (results.json, else the grid's
    record of the interrupted run), or None."""
    import json
    for name, key in (("results.json", "config_digest"), (".grid-run.json", "config_digest")):
        path = osp.join(out, name)
        if osp.isfile(path):
            try:
                with open(path) as f:
                    return json.load(f).get(key)
            except (OSError, ValueError, AttributeError):
                return None
    return None


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


def plan(runs, dry_run=False):
    """Decide each run's action from its folder: skip (results.json with the same
    digest), redo (another config's folder: moved aside), resume (interrupted), run,
    or running (a SLURM job of an earlier, stopped call still has it: left alone)."""
    moved = []
    for r in runs:
        if not osp.isdir(r.out):
            r.action = "run"
            continue
        has_results = osp.isfile(osp.join(r.out, "results.json"))
        found = read_digest(r.out)
        job = None if has_results else read_record(r.out).get("slurm_job")
        if job and slurm_job_active(job):
            # submitted by an earlier call that was stopped: the job still owns the folder
            r.action, r.status, r.slurm_job = "running", "running", job
        elif has_results and found == r.digest:
            r.action = "skip"
        elif has_results or (found is not None and found != r.digest):
            r.action = "redo"
            if not dry_run:
                moved.append((r.out, move_aside(r.out)))
        else:
            r.action = "resume"
    return moved


def write_record(r, slurm_job=None):
    """Note the run's digest and command in its folder before it starts, so an
    interrupted run is recognised (and a changed config is not resumed); with the
    SLURM job that runs it, so a later call leaves a still-running job alone."""
    import json
    from toolbox.utils import atomic_write
    os.makedirs(r.out, exist_ok=True)
    rec = {"config_digest": r.digest, "command": r.command(python="python")}
    if slurm_job:
        rec["slurm_job"] = slurm_job
    atomic_write(osp.join(r.out, ".grid-run.json"), lambda f: f.write(json.dumps(rec, indent=1)))


def read_record(out):
    """The grid's record of a run folder ({} when there is none or it is unreadable)."""
    import json
    try:
        with open(osp.join(out, ".grid-run.json")) as f:
            rec = json.load(f)
        return rec if isinstance(rec, dict) else {}
    except (OSError, ValueError):
        return {}


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


# ---------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------

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
            extra = f" (exit {r.rc}, log {r.log})" if r.status == "failed" else ""
            print(f"[{self.finished}/{self.total} finished] {r.status} {r.out} in "
                  f"{fmt_time(r.seconds)}{extra}; elapsed {fmt_time(time.time() - self.start)}, "
                  f"ETA {self.eta()}", flush=True)


def run_process(cmd, log_path, env=None, echo=False):
    """Run CMD with stdout+stderr appended to LOG_PATH (and echoed when asked);
    return its exit code."""
    os.makedirs(osp.dirname(log_path), exist_ok=True)
    with open(log_path, "a", buffering=1) as log:
        log.write(f"# {datetime.datetime.now().isoformat(timespec='seconds')} "
                  f"{' '.join(shlex.quote(c) for c in cmd)}\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, text=True, bufsize=1)
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
            write_record(r)
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
        while pending:
            _, pending = wait(pending, return_when=FIRST_COMPLETED)
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
        write_record(r)
        fns.append(SlurmJob(r.command(python, resume=r.action == "resume"), r.out))
    t0 = time.time()
    with executor.batch():
        jobs = [executor.submit(fn) for fn in fns]
    array = jobs[0].job_id.split('_')[0]
    for r, job in zip(runs, jobs):
        write_record(r, slurm_job=job.job_id)
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


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------

def results_table(runs):
    """Mean +- std over seeds of each experiment of the grid, over the grid's own seeds
    (tools/parse_results.py's table, restricted to the grid's run folders)."""
    from tools.parse_results import render
    from tools.results_io import read_results, summarize, Run as ResultRun

    exps = OrderedDict()
    for r in runs:
        path = osp.join(r.out, "results.json")
        if osp.isfile(path):
            exps.setdefault(osp.dirname(r.out), []).append(
                ResultRun(path, osp.dirname(r.out), r.seed, read_results(path)))
    return render([summarize(exp, rs) for exp, rs in exps.items()]) if exps else ""


def compare_tables(runs, shots, output_root):
    """tools/compare.py's table per (dataset, backbone) of the grid."""
    from tools import compare

    blocks = []
    for dataset, backbone in OrderedDict(((r.dataset, r.backbone), None) for r in runs):
        try:
            tables = compare.tables(compare.collect(output_root, dataset, backbone), shots)
            blocks.append(f"# {dataset}, {backbone}\n" + compare.render(tables))
        except UserError as e:
            blocks.append(f"# {dataset}, {backbone}: no table ({one_line(e)})")
    return "\n\n".join(blocks)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="methods and variants: " + "; ".join(
                                    f"{m.name} ({', '.join(m.variants) if m.variants else m.doc if hasattr(m, 'doc') else 'w<W>'})"  # noqa: E501
                                    for m in METHODS.values()))
    p.add_argument("--config", help="grid YAML (methods, datasets, shots, seeds, backbones, "
                   "opts, zs_seeds, tag)")
    p.add_argument("--methods", nargs="+", help="METHOD[:VARIANT,VARIANT...] ...")
    p.add_argument("--datasets", nargs="+", help="dataset config names (configs/datasets)")
    p.add_argument("--shots", nargs="+", help="shot counts (default 16)")
    p.add_argument("--seeds", nargs="+", help="seeds (default 1 2 3)")
    p.add_argument("--zs-seeds", nargs="+", help="seeds of zsclip runs (default: the first seed)")
    p.add_argument("--backbones", nargs="+",
                   help="backbone keys (default: tiny_vit on demo datasets, rn50 otherwise)")
    p.add_argument("--pretrained", help="OpenCLIP weights tag (MODEL.BACKBONE.PRETRAINED; "
                   "folders <backbone>@<tag>_...)")
    p.add_argument("--backbone-path", help="backbone checkpoint file (MODEL.BACKBONE.PATH)")
    p.add_argument("--opts", nargs="+", help="KEY VALUE overrides for every run")
    p.add_argument("--tag", help="suffix of the variant folder (<variant>_<tag>), to keep runs "
                   "with other --opts apart")
    p.add_argument("--data", default=os.environ.get("DATA", "./data"),
                   help="dataset root (default $DATA or ./data)")
    p.add_argument("--output-root", default="output", help="output root (default output)")
    p.add_argument("--executor", choices=("local", "slurm"),
                   default=os.environ.get("EXECUTOR") or "local")
    p.add_argument("--workers", type=int, default=1, help="local: runs at once on CPU")
    p.add_argument("--gpus", help="local: GPU ids, one run at a time on each (e.g. 0,1,2; "
                   "repeat an id to share a GPU)")
    p.add_argument("--python", default=sys.executable, help="interpreter for train.py")
    p.add_argument("--slurm-partition")
    p.add_argument("--slurm-time", type=int, default=240, help="minutes per run")
    p.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per run")
    p.add_argument("--slurm-cpus", type=int, default=4, help="CPUs per run")
    p.add_argument("--slurm-mem", type=int, default=0, help="GB per run (0: cluster default)")
    p.add_argument("--slurm-parallel", type=int, default=0, help="array tasks at once "
                   "(0: all)")
    p.add_argument("--slurm-extra", nargs="+", help="more sbatch options as KEY=VALUE "
                   "(e.g. account=lab qos=short)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--no-table", action="store_true", help="no result tables at the end")
    p.add_argument("--compare", action="store_true",
                   help="end with tools/compare.py's table per dataset and backbone (the "
                   "default when the grid has several methods or variants)")
    return p


def load_spec(args):
    spec = {}
    if args.config:
        import yaml
        try:
            with open(args.config) as f:
                spec = yaml.safe_load(f) or {}
        except OSError as e:
            raise UserError(f"cannot read grid file {args.config}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise UserError(f"grid file {args.config} is not valid YAML: {one_line(e)}") \
                from None
        if not isinstance(spec, dict):
            raise UserError(f"grid file {args.config} must be a mapping (methods:, datasets:, "
                            "...)")
        fields = ("methods", "datasets", "shots", "seeds", "zs_seeds", "backbones", "opts",
                  "tag", "pretrained", "backbone_path")
        unknown = set(spec) - set(fields)
        if unknown:
            raise UserError(f"unknown field(s) {', '.join(sorted(unknown))} in {args.config}; "
                            f"use {', '.join(fields)}")
    for key in ("methods", "datasets", "shots", "seeds", "zs_seeds", "backbones", "opts",
                "tag", "pretrained", "backbone_path"):
        value = getattr(args, key)
        if value:
            spec[key] = value
    return spec


def main(argv=None):
    args = get_parser().parse_args(argv)
    try:
        spec = load_spec(args)
        runs = expand(spec, data=args.data, output_root=args.output_root)
        gpus = None
        if args.executor == "slurm":
            check_slurm()
        elif args.gpus:
            gpus = visible_gpus([g for g in re.split(r"[,\s]+", args.gpus.strip()) if g])
        if args.workers < 1:
            raise UserError(f"--workers must be at least 1, got {args.workers}")
        # An absolute interpreter: a SLURM job (or a worker with another PATH) must find
        # the same Python, with torch, as the one the grid was started with.
        python = shutil.which(args.python)
        if python is None:
            raise UserError(f"--python / PYTHON: no interpreter '{args.python}' found; give "
                            "the path of the Python that has the requirements installed")
        args.python = osp.abspath(python)
        compute_digests(runs)
        moved = plan(runs, dry_run=args.dry_run)
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    todo = [r for r in runs if r.action not in ("skip", "running")]
    running = [r for r in runs if r.action == "running"]
    for r in runs:
        if r.action == "skip":
            r.status = "skipped"
    print(f"Grid: {len(runs)} runs, {sum(r.action == 'skip' for r in runs)} finished already "
          f"(skipped), {len(todo)} to run"
          + (f" ({sum(r.action == 'resume' for r in todo)} resumed)" if todo else "")
          + (f", {len(running)} still running as SLURM jobs of an earlier call (left alone)"
             if running else ""), flush=True)
    for r in running:
        print(f"  running: {r.out} (SLURM job {r.slurm_job})", flush=True)
    for old, new in moved:
        print(f"Config changed: moved {old} aside to {new}", flush=True)
    if args.dry_run:
        for r in runs:
            print(f"[{r.action}] " + " ".join(shlex.quote(c) for c in
                                             r.command(args.python, r.action == "resume")))
        return 0
    t0 = time.time()
    try:
        if todo and args.executor == "slurm":
            run_slurm(todo, args, args.python)
        elif todo:
            run_local(todo, args.workers, gpus, args.python)
    except KeyboardInterrupt:
        if args.executor != "slurm":  # (run_slurm said what happens to its jobs)
            print("Interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    failed = [r for r in runs if r.status == "failed"]
    done = sum(r.status == "done" for r in runs)
    print(f"\nGrid finished in {fmt_time(time.time() - t0)}: {done} done, "
          f"{sum(r.action == 'skip' for r in runs)} skipped, {len(failed)} failed"
          + (f", {len(running)} still running in SLURM (run the same command again when "
             "they end)" if running else ""))
    for r in failed:
        print(f"  failed: {r.out} (exit {r.rc}); log: {getattr(r, 'log_file', r.log)}")
    if not args.no_table:
        table = results_table(runs)
        if table:
            print("\nMean ± std over seeds of the grid's runs:\n" + table)
        # several methods or variants: tools/compare.py's side-by-side table too
        compared = {(r.method, osp.basename(osp.dirname(r.out))) for r in runs}
        if args.compare or len(compared) > 1:
            shots = sorted({r.shots for r in runs if r.shots > 0}) or [0]
            print("\n" + compare_tables(runs, shots, args.output_root))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
