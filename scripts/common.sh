#!/usr/bin/env bash
# Shared by scripts/<method>/*.sh: argument checks, config lookup, the seed
# loop with skipping of finished runs, and the output layout
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
# from PRETRAINED=<tag> (folder <name>@<tag>_...) or BACKBONE_PATH=<checkpoint file>.
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

# run_seeds TRAINER CONFIG_NAME DATASET SHOTS VARIANT [KEY VALUE ...]
run_seeds() {
    local trainer="$1" cfg_name="$2" dataset="$3" shots="$4" variant="$5"
    shift 5
    local dcfg tcfg line name bb
    dcfg="$(dataset_config "$dataset")"
    line="$(resolve_config "$trainer" "$cfg_name")" || exit 2
    IFS=$'\t' read -r name tcfg bb <<< "$line"
    local bb_opts=()
    [ "$bb" = "-" ] || bb_opts+=(MODEL.BACKBONE.NAME "$bb")
    if [ -n "${PRETRAINED:-}" ]; then
        bb_opts+=(MODEL.BACKBONE.PRETRAINED "$PRETRAINED")
        local canon="${bb#-}"
        [ -n "$canon" ] || canon="${name%%_*}"
        name="${canon}@${PRETRAINED}${name#"$canon"}"
    fi
    [ -z "${BACKBONE_PATH:-}" ] || bb_opts+=(MODEL.BACKBONE.PATH "$BACKBONE_PATH")
    for seed in $SEEDS; do
        local out="output/${dataset}/${trainer}/${name}_${shots}shots/${variant}/seed${seed}"
        echo "Running $trainer on $dataset, $shots shots, seed $seed -> $out"
        run_once "$out" --seed "$seed" --trainer "$trainer" \
            --dataset-config-file "$dcfg" --config-file "$tcfg" DATASET.NUM_SHOTS "$shots" \
            "${bb_opts[@]}" "$@"
    done
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
