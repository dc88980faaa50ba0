#!/usr/bin/env bash
# Every method of the comparison on one dataset or suite as one grid
# (tools/grid.py: run i of N with an ETA, finished runs skipped, interrupted ones
# resumed), then the side-by-side mean +- std table and the accuracy-vs-shots plot
# (tools/compare.py).
# usage: bash scripts/compare_all.sh DATASET "SHOTS_LIST" [BACKBONE]
#   e.g. SEEDS="1 2" WORKERS=2 bash scripts/compare_all.sh demo "1 4"
#   METHODS (default: every method whose declaration in trainers/ puts it in the
#   comparison; python tools/methods.py lists them) chooses what runs; <METHOD>_VARIANTS
#   (e.g. <NAME>_VARIANTS="V1 V2" with the method name in capitals) its
#   variants (default: the declaration's); ZS_SEEDS (the first seed) the seeds of
#   methods that train nothing; WORKERS / GPUS / EXECUTOR / OPTS as in scripts/common.sh.
source "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/compare_all.sh DATASET \"SHOTS_LIST\" [BACKBONE]"
DATASET="$1"; SHOTS_LIST="$2"
BACKBONE="${3:-$(default_backbone "$DATASET")}"
for s in $SHOTS_LIST; do check_shots "$s"; done
dataset_config "$DATASET" >/dev/null
echo "Comparing ${METHODS:-the declared comparison} on $DATASET, shots $SHOTS_LIST, backbone $BACKBONE, seeds $SEEDS"

# shellcheck disable=SC2086
ENTRIES="$("$PYTHON" "$REPO/tools/methods.py" --comparison ${METHODS:-})" || exit 2
grid_opts
ZS=()
# shellcheck disable=SC2206
[ -n "${ZS_SEEDS:-}" ] && ZS=(--zs-seeds $ZS_SEEDS)
rc=0
# shellcheck disable=SC2086
"$PYTHON" "$REPO/tools/grid.py" --methods $ENTRIES --datasets "$DATASET" \
    --shots $SHOTS_LIST --backbones "$BACKBONE" --seeds $SEEDS "${ZS[@]}" \
    --no-table "${GRID_ARGS[@]}" || rc=$?
[ "$rc" -eq 2 ] && exit 2  # bad input: the grid said what (one error line)
[ "$rc" -eq 0 ] || echo "Some runs failed (listed above); the table shows the others"
[ -n "${DRY_RUN:-}" ] && exit 0
CANON="$(canonical_backbone "$BACKBONE")"
[ -z "${PRETRAINED:-}" ] || CANON="$CANON@$PRETRAINED"
# shellcheck disable=SC2086
"$PYTHON" "$REPO/tools/compare.py" --root "${OUT_ROOT:-output}" --dataset "$DATASET" \
    --backbone "$CANON" --shots $SHOTS_LIST --plot "${OUT_ROOT:-output}/$DATASET/compare_${CANON}.png"
