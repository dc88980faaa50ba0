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

# Backbone key used in config names: rn50 rn101 vit_b32 vit_b16 vit_l14 tiny_vit tiny_rn.
# The demo runs on the tiny CLIP unless told otherwise.
default_backbone() {
    case "$1" in demo|demo_*) echo tiny_vit ;; *) echo rn50 ;; esac
}

dataset_config() {
    local cfg="$REPO/configs/datasets/$1.yaml"
    [ -f "$cfg" ] || die "no dataset config $cfg; available: $(ls "$REPO/configs/datasets" | sed 's/\.yaml//' | tr '\n' ' ')"
    echo "$cfg"
}

trainer_config() {  # TRAINER CONFIG_NAME
    local cfg="$REPO/configs/trainers/$1/$2.yaml"
    [ -f "$cfg" ] || die "no trainer config $cfg; available: $(ls "$REPO/configs/trainers/$1" | sed 's/\.yaml//' | tr '\n' ' ')"
    echo "$cfg"
}

check_shots() {
    [[ "$1" =~ ^-?[0-9]+$ ]] || die "SHOTS must be a number (1 2 4 8 16, or -1 for all), got '$1'"
}

# run_seeds TRAINER CONFIG_NAME DATASET SHOTS VARIANT [KEY VALUE ...]
run_seeds() {
    local trainer="$1" cfg_name="$2" dataset="$3" shots="$4" variant="$5"
    shift 5
    local dcfg tcfg
    dcfg="$(dataset_config "$dataset")"
    tcfg="$(trainer_config "$trainer" "$cfg_name")"
    for seed in $SEEDS; do
        local out="output/${dataset}/${trainer}/${cfg_name}_${shots}shots/${variant}/seed${seed}"
        echo "Running $trainer on $dataset, $shots shots, seed $seed -> $out"
        run_once "$out" --seed "$seed" --trainer "$trainer" \
            --dataset-config-file "$dcfg" --config-file "$tcfg" DATASET.NUM_SHOTS "$shots" "$@"
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
