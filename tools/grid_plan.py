"""Planning a grid: which train.py runs a grid spec means, their config digests, and
what each run folder needs (skip, run, resume, move aside and redo).

The methods come from their declarations (toolbox/methods.py, one in each trainer
file): this module names none of them.
"""
import os
import os.path as osp
import re
import shlex
import sys
from collections import OrderedDict
from dataclasses import dataclass

from toolbox.errors import UserError, one_line
from toolbox.methods import RunContext, get_method, load_methods, read_yaml
from toolbox.run_folder import (GRID_LOG, folder_in_use, folder_state, move_aside,
                                read_record, run_dir)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(ROOT, "configs")


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
    action: str = ""  # skip | run | resume | redo | running
    status: str = ""  # done | skipped | failed | running
    seconds: float = 0.0
    rc: int = None
    slurm_job: str = ""
    owner: str = ""  # who still runs it (a SLURM job or a live process), for action running
    log_file: str = ""  # where its output went (grid.log, or a SLURM job's log)

    @property
    def log(self):
        return self.log_file or osp.join(self.out, GRID_LOG)

    def command(self, python=None, resume=False):
        cmd = [python or sys.executable, osp.join(ROOT, "train.py"), "--output-dir", self.out]
        if resume:
            cmd.append("--resume")
        return cmd + self.argv


# ---- what the names mean ---------------------------------------------------------

def default_backbone(dataset):
    """The backbone a script uses when none is given: the tiny CLIP on the demo."""
    return "tiny_vit" if dataset == "demo" or dataset.startswith("demo_") else "rn50"


def dataset_yaml(dataset):
    """The dataset config as a dict ({} when unreadable as a mapping)."""
    path = osp.join(CONFIGS, "datasets", dataset + ".yaml")
    try:
        return read_yaml(path)
    except Exception as e:  # noqa: BLE001  (yaml's errors: one line naming the file)
        raise UserError(f"{path} is not valid YAML ({one_line(e)}); fix that file") from None


def is_suite(dataset):
    """Whether a dataset config is a suite (several tasks), by its DATASET.SUITE key
    (a warning where the file still has the old '# suite' marker instead)."""
    from toolbox.data.suite import is_suite as config_is_suite

    return config_is_suite(osp.join(CONFIGS, "datasets", dataset + ".yaml"))


def _as_list(value):
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return str(value).split()


def parse_methods(entries):
    """['M:V1,V2', 'N'] or {M: [V1, V2], N: null} -> [(method, variant)] (null or no
    variants: the method's default variant)."""
    load_methods()
    pairs = []
    if isinstance(entries, dict):
        items = [(k, _as_list(v) or []) for k, v in entries.items()]
    else:
        items = []
        for e in entries:
            name, _, vs = str(e).partition(":")
            items.append((name, [v for v in vs.split(",") if v]))
    for name, variants in items:
        method = get_method(name)
        for v in variants or [method.default_variant]:
            method.check_variant(v)
            if (method.name, v) not in pairs:
                pairs.append((method.name, v))
    return pairs


def _check_int(what, values):
    out = []
    for v in values:
        if not re.fullmatch(r"-?\d+", str(v)):
            raise UserError(f"{what} must be whole numbers, got '{v}'")
        out.append(int(v))
    return out


def _extra_opts(spec):
    extra = spec.get("opts") or []
    if isinstance(extra, dict):
        extra = [x for kv in extra.items() for x in kv]
    if isinstance(extra, (list, tuple)) and len(extra) == 1:
        extra = extra[0]  # one string "KEY VALUE ..." (the scripts' OPTS)
    extra = [str(x) for x in (shlex.split(extra) if isinstance(extra, str) else extra)]
    if len(extra) % 2:
        raise UserError(f"opts must be KEY VALUE pairs, got an odd number: {' '.join(extra)}")
    return extra


def _check_datasets(datasets):
    if not datasets:
        raise UserError("no datasets in the grid; give --datasets (names in configs/datasets)")
    available = sorted(f[:-5] for f in os.listdir(osp.join(CONFIGS, "datasets"))
                       if f.endswith(".yaml"))
    for d in datasets:
        if d not in available:
            raise UserError(f"no dataset config configs/datasets/{d}.yaml (unknown dataset "
                            f"'{d}'); available: {' '.join(available)}")


# ---- the runs of a spec ----------------------------------------------------------------

def expand(spec, data="./data", output_root="output"):
    """The runs of a grid spec (dict of lists), in the order the scripts run them:
    per dataset, backbone, shots, method and variant, the seeds. Duplicates (zero-shot
    runs at several shot counts) appear once."""
    methods = parse_methods(spec.get("methods") or [])
    if not methods:
        raise UserError("no methods in the grid; give --methods METHOD[:VARIANT,...] (python tools/methods.py lists them)")
    datasets = _as_list(spec.get("datasets")) or []
    _check_datasets(datasets)
    shots_list = _check_int("shots", _as_list(spec.get("shots")) or ["16"])
    seeds = _check_int("seeds", _as_list(spec.get("seeds")) or ["1", "2", "3"])
    zs_seeds = _check_int("zero-shot seeds", _as_list(spec.get("zs_seeds")) or seeds[:1])
    backbones = _as_list(spec.get("backbones"))
    extra = _extra_opts(spec)
    tag = spec.get("tag") or ""
    pretrained, backbone_path = spec.get("pretrained") or "", spec.get("backbone_path") or ""
    from tools.backbones import resolve_config
    from trainers.backbones import RANDOM, canonical_name, get_backbone, open_clip_tags

    def takes_tag(backbone):
        """--pretrained is an OpenCLIP weights tag: it applies to the OpenCLIP backbones
        of the grid ('random', seeded random weights, to every backbone)."""
        return pretrained == RANDOM or get_backbone(backbone).family == "open_clip"

    if pretrained:
        named = [canonical_name(b) for b in backbones or [default_backbone(d) for d in datasets]]
        if not any(takes_tag(b) for b in named):
            raise UserError(f"--pretrained '{pretrained}' (PRETRAINED) is an OpenCLIP weights tag, "
                            "but no backbone of the grid is an OpenCLIP model "
                            f"({' '.join(named)}); drop it or give open_clip:<arch> backbones")

    runs, seen = [], set()
    for dataset in datasets:
        dcfg = osp.join(CONFIGS, "datasets", dataset + ".yaml")
        dyaml = dataset_yaml(dataset)
        suite = is_suite(dataset)
        for backbone in backbones or [default_backbone(dataset)]:
            backbone = canonical_name(backbone)
            entry = get_backbone(backbone)
            weights_tag = pretrained if pretrained and takes_tag(backbone) else ""
            if entry.family == "open_clip" and not (
                    weights_tag or backbone_path or "MODEL.BACKBONE.PRETRAINED" in extra
                    or "MODEL.BACKBONE.PATH" in extra):
                tags = open_clip_tags(backbone)
                raise UserError(f"backbone {backbone} needs its weights named: --pretrained <tag> "
                                f"(scripts: PRETRAINED=<tag>; its tags: {tags or 'none'}; or "
                                "'random') or --backbone-path <checkpoint> (BACKBONE_PATH=...)")
            for shots in shots_list:
                ctx = RunContext(dataset, shots, backbone, "tiny" if entry.tiny else entry.family,
                                 suite, "fewshot", dyaml)
                for name, variant in methods:
                    method = get_method(name)
                    s = method.setting(ctx, variant)
                    try:
                        # a backbone without its own config runs the vit_b16/rn50 (tiny_vit)
                        # config of the same schedule with MODEL.BACKBONE.NAME set
                        cfg_name, tcfg, override = resolve_config(s.trainer, s.config)
                    except UserError as e:
                        folder = osp.join(CONFIGS, "trainers", s.trainer)
                        have = sorted(f[:-5] for f in os.listdir(folder)
                                      if f.endswith(".yaml")) if osp.isdir(folder) else []
                        raise UserError(f"backbone '{backbone}' has no {s.trainer} config for "
                                        f"method {name} ({one_line(e)}); available: "
                                        f"{' '.join(have) or 'none'}") from None
                    bb_opts = [] if override == "-" else ["MODEL.BACKBONE.NAME", override]
                    if weights_tag:
                        bb_opts += ["MODEL.BACKBONE.PRETRAINED", weights_tag]
                        cfg_name = f"{backbone}@{weights_tag}{cfg_name[len(backbone):]}"
                    if backbone_path:
                        bb_opts += ["MODEL.BACKBONE.PATH", backbone_path]
                    n_shots = shots if s.shots is None else s.shots
                    folder = s.variant + (f"_{tag}" if tag else "")
                    # a method that trains nothing runs once per zero-shot seed
                    for seed in (seeds if method.trains else zs_seeds):
                        out = run_dir(output_root, dataset, s.trainer, cfg_name, n_shots,
                                      folder, seed)
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
    from toolbox.config import config_digest
    from toolbox.config_pipeline import cfg_from_argv

    for r in runs:
        try:
            r.cfg = cfg_from_argv(["--output-dir", r.out] + r.argv)
            r.digest = config_digest(r.cfg)
        except UserError as e:
            raise UserError(f"{r.out}: {one_line(e)}") from None


def preflight(runs):
    """Check once, for all the runs that will start, that their data and backbone weights
    are there (what tools/check_data.py checks, with each run's config); a UserError
    naming every missing piece and the check_data command to see the details. Runs
    the compute_digests configs."""
    from toolbox.data.datasets.check import check_data
    from tools.check_data import backbone_report

    missing, first, seen = OrderedDict(), None, set()
    for r in runs:
        cfg = getattr(r, "cfg", None)
        if cfg is None or r.action in ("skip", "running"):
            continue
        data_key = ("data", cfg.DATASET.ROOT, cfg.DATASET.NAME, tuple(cfg.DATASET.TASKS))
        weights_key = ("weights", cfg.MODEL.BACKBONE.NAME, str(cfg.MODEL.BACKBONE.PRETRAINED),
                       cfg.MODEL.BACKBONE.PATH)
        problems = []
        if data_key not in seen:
            seen.add(data_key)
            problems += [f"{c.name}: {c.message()}" for c in check_data(cfg) if not c.ok]
        if weights_key not in seen:
            seen.add(weights_key)
            ok, line = backbone_report(cfg)
            problems += [] if ok else [line]
        for p in problems:
            missing.setdefault(p, r)
        first = first or (r if problems else None)
    if not missing:
        return
    argv = first.argv
    command = (f"python tools/check_data.py --root {argv[argv.index('--root') + 1]} "
               f"--dataset-config-file {argv[argv.index('--dataset-config-file') + 1]} "
               f"--method {first.method} --backbone {first.backbone.split('@')[0]} "
               f"--shots {first.shots}")
    raise UserError(f"the grid's runs need {len(missing)} missing piece(s), so none was "
                    f"started: {'; '.join(missing)}; details: {command}")


def plan(runs, dry_run=False, job_active=None):
    """Decide each run's action from its folder: skip (its finished run), redo
    (another config's run, finished or not: moved aside), resume (its unfinished run),
    run, or running (a SLURM job of an earlier, stopped call still has it: left
    alone; ``job_active(job_id)`` answers that). Returns [(old, new)] folders moved."""
    moved = []
    for r in runs:
        state = folder_state(r.out, r.digest)
        job = read_record(r.out).get("slurm_job") if state == "unfinished" else None
        pid = folder_in_use(r.out) if state in ("unfinished", "other") else None
        if pid is not None:
            # a live process (a run of an earlier, stopped call) holds the folder
            r.action, r.status, r.owner = "running", "running", f"process {pid}"
        elif job and job_active is not None and job_active(job):
            # submitted by an earlier call that was stopped: the job still owns the folder
            r.action, r.status, r.slurm_job = "running", "running", job
            r.owner = f"SLURM job {job}"
        elif state == "absent":
            r.action = "run"
        elif state == "finished":
            r.action = "skip"
        elif state == "other":
            r.action = "redo"
            if not dry_run:
                moved.append((r.out, move_aside(r.out)))
        else:
            r.action = "resume"
    return moved
