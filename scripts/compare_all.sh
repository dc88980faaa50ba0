#!/usr/bin/env bash
# Every method of SoftCPT's comparison on one dataset or suite, then the
# side-by-side table and the accuracy-vs-shots plot (tools/compare.py).
# usage: bash scripts/compare_all.sh DATASET "SHOTS_LIST" [BACKBONE]
#   e.g. SEEDS="1 2" bash scripts/compare_all.sh demo "1 4"
#   SOFTCPT_VARIANTS (default "NATA") and COOP_MT_MODES (default
#   "shared task class") choose which variants run.
source "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/compare_all.sh DATASET \"SHOTS_LIST\" [BACKBONE]"
DATASET="$1"; SHOTS_LIST="$2"
BACKBONE="${3:-$(default_backbone "$DATASET")}"
for s in $SHOTS_LIST; do check_shots "$s"; done
HERE="$(dirname "$0")"

SEEDS="${ZS_SEEDS:-1}" bash "$HERE/zsclip/main.sh" "$DATASET" 0 "$BACKBONE"
for shots in $SHOTS_LIST; do
    for v in ${SOFTCPT_VARIANTS:-NATA}; do
        bash "$HERE/softcpt/main.sh" "$DATASET" "$shots" "$BACKBONE" "$v"
    done
    for m in ${COOP_MT_MODES:-shared task class}; do
        bash "$HERE/coop_mt/main.sh" "$DATASET" "$shots" "$BACKBONE" "$m"
    done
    bash "$HERE/coop/main.sh" "$DATASET" "$shots" "$BACKBONE"
    bash "$HERE/cocoop/main.sh" "$DATASET" "$shots" "$BACKBONE"
    bash "$HERE/linear_probe/main.sh" "$DATASET" "$shots" "$BACKBONE"
done
CANON="$(canonical_backbone "$BACKBONE")"
[ -z "${PRETRAINED:-}" ] || CANON="$CANON@$PRETRAINED"
# shellcheck disable=SC2086
"$PYTHON" "$REPO/tools/compare.py" --dataset "$DATASET" --backbone "$CANON" --shots $SHOTS_LIST \
    --plot "output/$DATASET/compare_${CANON}.png"
