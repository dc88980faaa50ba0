#!/usr/bin/env bash
# The generalisation protocols, shared by scripts/protocol.sh and
# scripts/<method>/{base2new,xd,dg}_*.sh. The caller sets METHOD (a registered method
# that declares the protocol) and sources this file; the method's trainer and config
# schedules (TRAINER, CFG_REAL, CFG_TINY) come from its declaration (tools/methods.py
# --protocol); each protocol step is then one call.
#
# Layout under $OUT_ROOT (default output/), read by tools/protocols.py:
#   base2new/train_base/<dataset>/shots_<K>/<Trainer>/<config>/seed<S>   trained on base classes
#   base2new/test_new/<dataset>/shots_<K>/<Trainer>/<config>/seed<S>     same model, new classes
#   xd/train/<source>/shots_<K>/<Trainer>/<config>/seed<S>               cross-dataset source model
#   xd/test/<source>/<target>/shots_<K>/<Trainer>/<config>/seed<S>       evaluated on a target
#   dg/test/<source>/<target>/shots_<K>/<Trainer>/<config>/seed<S>       evaluated on a shifted domain
#
# Environment: DATA, PYTHON (see common.sh); SHOTS (16); BACKBONE (vit_b16, tiny_vit
# for demo datasets); CFG (full trainer config name, overrides BACKBONE); OUT_ROOT;
# XD_SOURCE (imagenet); XD_TARGETS (the other 10 datasets, used by xd_test.sh all);
# DG_TARGETS (imagenetv2 imagenet_sketch imagenet_a imagenet_r); OPTS (extra KEY VALUE
# overrides for every run, e.g. "OPTIM.MAX_EPOCH 2"; give VARIANT a name for them so
# their results land in their own folder <config>_<VARIANT>).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SHOTS="${SHOTS:-16}"
OUT_ROOT="${OUT_ROOT:-output}"
XD_SOURCE="${XD_SOURCE:-imagenet}"
XD_TARGETS="${XD_TARGETS:-caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101}"
DG_TARGETS="${DG_TARGETS:-imagenetv2 imagenet_sketch imagenet_a imagenet_r}"
read -r -a EXTRA_OPTS <<< "${OPTS:-}"

# load_schedule PROTOCOL: TRAINER, CFG_REAL and CFG_TINY of METHOD in PROTOCOL, from
# its declaration (one error line when it does not declare the protocol).
load_schedule() {
    [ -n "${METHOD:-}" ] || die "scripts/protocols.sh needs METHOD (a method name) set"
    echo "$METHOD, $1 protocol: reading its recipe"
    local line
    line="$("$PYTHON" "$REPO/tools/methods.py" --protocol "$METHOD" "$1")" || exit 2
    IFS=$'\t' read -r TRAINER CFG_REAL CFG_TINY <<< "$line"
}

# config_name DATASET: the trainer config used for DATASET (the demo runs on the tiny CLIP).
config_name() {
    if [ -n "${CFG:-}" ]; then echo "$CFG"; return; fi
    local bb="${BACKBONE:-}"
    if [ -z "$bb" ]; then
        case "$1" in demo|demo_*) bb=tiny_vit ;; *) bb=vit_b16 ;; esac
    fi
    case "$bb" in tiny_*) echo "${bb}_${CFG_TINY}" ;; *) echo "${bb}_${CFG_REAL}" ;; esac
}

check_seed() {
    [[ "$1" =~ ^[0-9]+$ ]] || die "SEED must be a positive number, got '$1'"
}

# method_dir DATASET: shots_<K>/<Trainer>/<config>[_<VARIANT>] (the part shared by train and test)
method_dir() {
    echo "shots_${SHOTS}/${TRAINER}/$(config_name "$1")${VARIANT:+_$VARIANT}"
}

# protocol_run OUT DATASET SEED [KEY VALUE ...]: train.py with the method's config on DATASET.
protocol_run() {
    local out="$1" dataset="$2" seed="$3"
    shift 3
    local dcfg tcfg
    dcfg="$(dataset_config "$dataset")"
    tcfg="$(trainer_config "$TRAINER" "$(config_name "$dataset")")"
    echo "$TRAINER on $dataset, seed $seed -> $out"
    run_once "$out" --seed "$seed" --trainer "$TRAINER" --dataset-config-file "$dcfg" \
        --config-file "$tcfg" "$@" DATASET.NUM_SHOTS "$SHOTS" "${EXTRA_OPTS[@]}"
}

# require_model DIR WHAT: fail with the command that makes the missing model.
require_model() {
    [ -f "$1/results.json" ] || die "no trained model in $1; run $2 first"
}

b2n_train() {  # DATASET SEED
    [ $# -eq 2 ] || die "usage: base2new_train.sh DATASET SEED"
    check_seed "$2"
    load_schedule base2new
    protocol_run "$OUT_ROOT/base2new/train_base/$1/$(method_dir "$1")/seed$2" "$1" "$2" \
        DATASET.SUBSAMPLE_CLASSES base
}

b2n_test() {  # DATASET SEED
    [ $# -eq 2 ] || die "usage: base2new_test.sh DATASET SEED"
    check_seed "$2"
    load_schedule base2new
    local model="$OUT_ROOT/base2new/train_base/$1/$(method_dir "$1")/seed$2"
    require_model "$model" "base2new_train.sh $1 $2"
    protocol_run "$OUT_ROOT/base2new/test_new/$1/$(method_dir "$1")/seed$2" "$1" "$2" \
        --eval-only --model-dir "$model" DATASET.SUBSAMPLE_CLASSES new
}

xd_model() {  # SEED: the cross-dataset source model folder
    echo "$OUT_ROOT/xd/train/$XD_SOURCE/$(method_dir "$XD_SOURCE")/seed$1"
}

xd_train() {  # SEED
    [ $# -eq 1 ] || die "usage: xd_train.sh SEED"
    check_seed "$1"
    load_schedule xd
    protocol_run "$(xd_model "$1")" "$XD_SOURCE" "$1"
}

# transfer_test PROTOCOL TARGET SEED: evaluate the source model on TARGET
# (its test split, all classes); the model's config is the source's.
transfer_test() {
    local protocol="$1" target="$2" seed="$3" model
    model="$(xd_model "$seed")"
    require_model "$model" "xd_train.sh $seed"
    CFG="$(config_name "$XD_SOURCE")" protocol_run \
        "$OUT_ROOT/$protocol/test/$XD_SOURCE/$target/$(method_dir "$XD_SOURCE")/seed$seed" \
        "$target" "$seed" --eval-only --model-dir "$model"
}

xd_test() {  # DATASET|all SEED
    [ $# -eq 2 ] || die "usage: xd_test.sh DATASET|all SEED"
    check_seed "$2"
    load_schedule xd
    local targets="$1"
    [ "$1" = "all" ] && targets="$XD_TARGETS"
    for target in $targets; do
        transfer_test xd "$target" "$2"
    done
}

dg_test() {  # SEED
    [ $# -eq 1 ] || die "usage: dg_test.sh SEED"
    check_seed "$1"
    load_schedule dg
    load_schedule xd  # the source model is the cross-dataset one (xd_train.sh)
    for target in $DG_TARGETS; do
        transfer_test dg "$target" "$1"
    done
}
