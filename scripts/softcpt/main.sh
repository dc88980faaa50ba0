#!/usr/bin/env bash
# SoftCPT on a suite (or one dataset), seeds $SEEDS (default 1 2 3).
# usage: bash scripts/softcpt/main.sh DATASET SHOTS [BACKBONE] [VARIANT]
#   VARIANT: NATA (default) NATS CATA CSTA CATS CSTS
#   e.g. bash scripts/softcpt/main.sh fewshot44 16 rn50 NATA
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/softcpt/main.sh DATASET SHOTS [BACKBONE] [VARIANT]"
DATASET="$1"; SHOTS="$2"; check_shots "$SHOTS"
BACKBONE="${3:-$(default_backbone "$DATASET")}"
VARIANT="${4:-NATA}"
case "$VARIANT" in
    NATA|NATS|CATA|CSTA|CATS|CSTS) ;;
    *) die "VARIANT must be one of NATA NATS CATA CSTA CATS CSTS, got '$VARIANT'" ;;
esac
# The paper's 50 epochs for every shot count; the tiny demo backbones use 10.
case "$BACKBONE" in tiny_*) CFG="${BACKBONE}_ep10" ;; *) CFG="${BACKBONE}_ep50" ;; esac
run_seeds SoftCPT "$CFG" "$DATASET" "$SHOTS" "$VARIANT" TRAINER.SOFTCPT.VARIANT "$VARIANT"
