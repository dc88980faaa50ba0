#!/usr/bin/env bash
# Shared by scripts/main.sh and scripts/<method>/*.sh: argument checks, config lookup, and the runs
# through tools/grid.py (seeds at once with WORKERS / GPUS / EXECUTOR=slurm, skipping
# finished runs, resuming interrupted ones), in the output layout
#   output/<dataset>/<Trainer>/<config>_<shots>shots/<variant>/seed<S>/
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${DATA:-./data}"
SEEDS="${SEEDS:-1 2 3}"
PYTHON="${PYTHON:-python}"

die() { echo "error: $*" >&2; exit 2; }

# Backbones: one name each, as `python tools/backbones.py` lists them (rn50 rn101 vit_b32
# vit_b16 vit_l14 ... tiny_vit tiny_rn, open_clip:<arch>); clip's names (RN50, ViT-B/16)
# and the other aliases work too and are written as the canonical name in output folders.
# A backbone without its own trainer config (open_clip:<arch>, rn50x4, ...) runs the
# vit_b16 config of the same schedule with MODEL.BACKBONE.NAME set; OpenCLIP weights come
# from PRETRAINED=<tag> (folder <name>@<tag>_...; OpenCLIP backbones only, 'random' for
# seeded random weights) or BACKBONE_PATH=<checkpoint file>.
# The demo runs on the tiny CLIP unless told otherwise.
default_backbone() {
    case "$1" in demo|demo_*) echo tiny_vit ;; *) echo rn50 ;; esac
}

# canonical_backbone NAME: the registered name of NAME (an alias such as RN50 or ViT-B/16).
canonical_backbone() {
    "$PYTHON" "$REPO/tools/backbones.py" --canonical "$1" || exit 2
}

dataset_config() {
    local cfg="$REPO/configs/datasets/$1.yaml"
    [ -f "$cfg" ] || die "no dataset config $cfg; available: $(ls "$REPO/configs/datasets" | sed 's/\.yaml//' | tr '\n' ' ')"
    echo "$cfg"
}

# resolve_config TRAINER CONFIG_NAME: "<canonical config name>\t<file>\t<NAME override or ->"
# for <backbone>_<schedule> with any backbone name or alias.
resolve_config() {
    if [ -f "$REPO/configs/trainers/$1/$2.yaml" ]; then
        printf '%s\t%s\t-\n' "$2" "$REPO/configs/trainers/$1/$2.yaml"
        return 0
    fi
    local out
    out="$("$PYTHON" "$REPO/tools/backbones.py" --resolve-config "$1" "$2" 2>&1)" || {
        [ -d "$REPO/configs/trainers/$1" ] || die "unknown trainer '$1'"
        die "no trainer config for '$2' (${out#error: }); available: $(ls "$REPO/configs/trainers/$1" | sed 's/\.yaml//' | tr '\n' ' ')"
    }
    echo "$out"
}

trainer_config() {  # TRAINER CONFIG_NAME
    local line
    line="$(resolve_config "$1" "$2")" || exit 2
    echo "$line" | cut -f2
}

check_shots() {
    [[ "$1" =~ ^-?[0-9]+$ ]] || die "SHOTS must be a number (1 2 4 8 16, or -1 for all), got '$1'"
}

# grid_opts: tools/grid.py flags from the environment (shared by every script):
#   SEEDS, OPTS ("KEY VALUE ..." overrides for every run), TAG (variant folder suffix
#   for runs with OPTS), WORKERS (K runs at once on CPU), GPUS ("0 1 2": one run at a
#   time on each), EXECUTOR (local | slurm), SLURM_PARTITION, SLURM_TIME (minutes per
#   run), SLURM_GPUS_PER_RUN, SLURM_CPUS_PER_RUN, SLURM_MEM_GB, SLURM_EXTRA ("account=x
#   qos=y": more sbatch options), OUT_ROOT (output), DRY_RUN=1 (print the commands),
#   PRETRAINED (OpenCLIP tag), BACKBONE_PATH (checkpoint file).
grid_opts() {
    GRID_ARGS=(--data "$DATA" --output-root "${OUT_ROOT:-output}" --python "$PYTHON")
    [ -n "${OPTS:-}" ] && GRID_ARGS+=(--opts "$OPTS")
    [ -n "${TAG:-}" ] && GRID_ARGS+=(--tag "$TAG")
    [ -n "${WORKERS:-}" ] && GRID_ARGS+=(--workers "$WORKERS")
    [ -n "${GPUS:-}" ] && GRID_ARGS+=(--gpus "$(echo "$GPUS" | tr ' ' ',')")
    [ -n "${EXECUTOR:-}" ] && GRID_ARGS+=(--executor "$EXECUTOR")
    [ -n "${SLURM_PARTITION:-}" ] && GRID_ARGS+=(--slurm-partition "$SLURM_PARTITION")
    [ -n "${SLURM_TIME:-}" ] && GRID_ARGS+=(--slurm-time "$SLURM_TIME")
    [ -n "${SLURM_GPUS_PER_RUN:-}" ] && GRID_ARGS+=(--slurm-gpus "$SLURM_GPUS_PER_RUN")
    [ -n "${SLURM_CPUS_PER_RUN:-}" ] && GRID_ARGS+=(--slurm-cpus "$SLURM_CPUS_PER_RUN")
    [ -n "${SLURM_MEM_GB:-}" ] && GRID_ARGS+=(--slurm-mem "$SLURM_MEM_GB")
    # shellcheck disable=SC2206
    [ -n "${SLURM_EXTRA:-}" ] && GRID_ARGS+=(--slurm-extra $SLURM_EXTRA)
    [ -n "${PRETRAINED:-}" ] && GRID_ARGS+=(--pretrained "$PRETRAINED")
    [ -n "${BACKBONE_PATH:-}" ] && GRID_ARGS+=(--backbone-path "$BACKBONE_PATH")
    [ -n "${DRY_RUN:-}" ] && GRID_ARGS+=(--dry-run)
    return 0
}

# run_method METHOD DATASET SHOTS BACKBONE [METHOD ARGS ...]: the method's runs for
# seeds $SEEDS through tools/grid.py (the method's recipe, variant folder and overrides
# come from its declaration in trainers/, which also reads METHOD ARGS); finished runs
# are skipped, interrupted ones resumed; at the end the mean +- std table of the runs.
# A method that trains nothing (zero-shot) runs once, for the first seed (ZS_SEEDS: others).
run_method() {
    local method="$1" dataset="$2" shots="$3" backbone="$4"
    shift 4
    dataset_config "$dataset" >/dev/null
    grid_opts
    local zs=()
    # shellcheck disable=SC2206
    [ -n "${ZS_SEEDS:-}" ] && zs=(--zs-seeds $ZS_SEEDS)
    # shellcheck disable=SC2086
    "$PYTHON" "$REPO/tools/grid.py" --methods "$method" --script-args "$@" --datasets "$dataset" \
        --shots "$shots" --backbones "$backbone" --seeds $SEEDS "${zs[@]}" "${GRID_ARGS[@]}"
}

# run_once OUT [train.py ARGS ...]: one train.py run into OUT, skipped when
# OUT/results.json exists (delete the folder to run again).
run_once() {
    local out="$1"
    shift
    if [ -f "$out/results.json" ]; then
        echo "Results exist in $out, skipping (delete the folder to run again)"
        return 0
    fi
    "$PYTHON" "$REPO/train.py" --root "$DATA" --output-dir "$out" "$@"
}
