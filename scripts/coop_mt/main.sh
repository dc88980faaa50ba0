#!/usr/bin/env bash
# CoOp trained jointly on a suite with hard context sharing, seeds $SEEDS.
# usage: bash scripts/coop_mt/main.sh DATASET SHOTS [BACKBONE] [MODE]
#   MODE: shared (CoOp-MT), task (CoOp-CA, default), class (CoOp-CS)
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/coop_mt/main.sh DATASET SHOTS [BACKBONE] [MODE]"
DATASET="$1"; SHOTS="$2"; check_shots "$SHOTS"
BACKBONE="${3:-$(default_backbone "$DATASET")}"
MODE="${4:-task}"
case "$MODE" in
    shared|task|class) ;;
    *) die "MODE must be shared, task or class, got '$MODE'" ;;
esac
case "$BACKBONE" in tiny_*) CFG="${BACKBONE}_ep10" ;; *) CFG="${BACKBONE}_ep50" ;; esac
run_seeds CoOpMT "$CFG" "$DATASET" "$SHOTS" "$MODE" TRAINER.COOP_MT.MODE "$MODE"
