#!/usr/bin/env bash
# CoOp on one dataset or a suite, seeds 1 2 3.
# usage: bash scripts/coop/main.sh DATASET SHOTS [BACKBONE] [N_CTX] [CSC] [CLASS_TOKEN_POSITION]
#   e.g. bash scripts/coop/main.sh eurosat 16 rn50 16 False end
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/coop/main.sh DATASET SHOTS [BACKBONE] [N_CTX] [CSC] [CLASS_TOKEN_POSITION]"
DATASET="$1"; SHOTS="$2"; check_shots "$SHOTS"
BACKBONE="${3:-$(default_backbone "$DATASET")}"
NCTX="${4:-16}"; CSC="${5:-False}"; CTP="${6:-end}"

# CoOp's shot-dependent schedule on single datasets; 50 epochs on suites (SoftCPT's setting).
case "$BACKBONE" in
    tiny_*) CFG="${BACKBONE}_ep10" ;;
    *) if [ -f "$REPO/configs/datasets/$DATASET.yaml" ] && grep -q "^# suite" "$REPO/configs/datasets/$DATASET.yaml"; then
           CFG="${BACKBONE}_ep50"
       elif [ "$SHOTS" -le 2 ]; then CFG="${BACKBONE}_ep50"
       elif [ "$SHOTS" -le 8 ]; then CFG="${BACKBONE}_ep100"
       else CFG="${BACKBONE}_ep200"; fi ;;
esac
run_seeds CoOp "$CFG" "$DATASET" "$SHOTS" "nctx${NCTX}_csc${CSC}_ctp${CTP}" \
    TRAINER.COOP.N_CTX "$NCTX" TRAINER.COOP.CSC "$CSC" TRAINER.COOP.CLASS_TOKEN_POSITION "$CTP"
