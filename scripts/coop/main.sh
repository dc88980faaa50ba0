#!/usr/bin/env bash
# CoOp on one dataset or a suite, seeds 1 2 3.
# usage: bash scripts/coop/main.sh DATASET SHOTS [BACKBONE] [N_CTX] [CSC] [CLASS_TOKEN_POSITION]
#   e.g. bash scripts/coop/main.sh eurosat 16 rn50 16 False end
source "$(dirname "$0")/../common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/coop/main.sh DATASET SHOTS [BACKBONE] [N_CTX] [CSC] [CLASS_TOKEN_POSITION]"
DATASET="$1"; SHOTS="$2"; check_shots "$SHOTS"
BACKBONE="${3:-$(default_backbone "$DATASET")}"
CSC="${5:-False}"; CTP="${6:-end}"

# CoOp's shot-dependent schedule on single datasets; 50 epochs on suites (SoftCPT's setting).
case "$BACKBONE" in
    tiny_*) CFG="${BACKBONE}_ep10" ;;
    *) if [ -f "$REPO/configs/datasets/$DATASET.yaml" ] && grep -q "^# suite" "$REPO/configs/datasets/$DATASET.yaml"; then
           CFG="${BACKBONE}_ep50"
       elif [ "$SHOTS" -le 2 ]; then CFG="${BACKBONE}_ep50"
       elif [ "$SHOTS" -le 8 ]; then CFG="${BACKBONE}_ep100"
       else CFG="${BACKBONE}_ep200"; fi ;;
esac

# A config's CTX_INIT fixes the context (its words) unless N_CTX is given here,
# which then wins with a random init; the variant folder says which it was.
TCFG="$(trainer_config CoOp "$CFG")"
CTX_INIT="$(sed -n 's/^ *CTX_INIT: *"\(.*\)".*/\1/p' "$TCFG")"
if [ -n "${4:-}" ] || [ -z "$CTX_INIT" ]; then
    NCTX="${4:-16}"
    CTX_ARGS=(TRAINER.COOP.N_CTX "$NCTX" TRAINER.COOP.CTX_INIT "")
else
    NCTX="$(echo "$CTX_INIT" | wc -w)"
    CTX_ARGS=()
fi
run_seeds CoOp "$CFG" "$DATASET" "$SHOTS" "nctx${NCTX}_csc${CSC}_ctp${CTP}" \
    "${CTX_ARGS[@]}" TRAINER.COOP.CSC "$CSC" TRAINER.COOP.CLASS_TOKEN_POSITION "$CTP"
