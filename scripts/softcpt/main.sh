#!/usr/bin/env bash
# SoftCPT on a suite (or one dataset), seeds $SEEDS (default 1 2 3).
# usage: bash scripts/softcpt/main.sh DATASET SHOTS [BACKBONE] [VARIANT]
#   VARIANT: NATA (default) NATS CATA CSTA CATS CSTS
#   e.g. bash scripts/softcpt/main.sh fewshot44 16 rn50 NATA
# Class sampling (TRAINER.SOFTCPT.CLS_SAMPLE_RATE): 0.1 for the class-aware
# variants (CA*, CS*) on general10, as upstream's README runs them; 0 (all
# classes) otherwise. CLS_SAMPLE_RATE=R changes it; a rate other than this
# default is named in the output folder (<variant>_csr<R>).
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
DEFAULT_RATE=0.0
case "$VARIANT:$DATASET" in NA*) ;; *:general10) DEFAULT_RATE=0.1 ;; esac
RATE="${CLS_SAMPLE_RATE:-$DEFAULT_RATE}"
[[ "$RATE" =~ ^(0*\.[0-9]+|[01](\.0*)?)$ ]] ||
    die "CLS_SAMPLE_RATE must be a number in [0, 1], got '$RATE'"
[[ "$RATE" == *.* ]] || RATE="$RATE.0"  # the config key is a float
FOLDER="$VARIANT"
[ "$(awk "BEGIN { print ($RATE == $DEFAULT_RATE) }")" = 1 ] || FOLDER="${VARIANT}_csr${RATE}"
run_seeds SoftCPT "$CFG" "$DATASET" "$SHOTS" "$FOLDER" TRAINER.SOFTCPT.VARIANT "$VARIANT" \
    TRAINER.SOFTCPT.CLS_SAMPLE_RATE "$RATE"
