#!/usr/bin/env bash
# Every method of SoftCPT's comparison on one dataset or suite as one grid
# (tools/grid.py: run i of N with an ETA, finished runs skipped, interrupted ones
# resumed), then the side-by-side mean +- std table and the accuracy-vs-shots plot
# (tools/compare.py).
# usage: bash scripts/compare_all.sh DATASET "SHOTS_LIST" [BACKBONE]
#   e.g. SEEDS="1 2" WORKERS=2 bash scripts/compare_all.sh demo "1 4"
#   SOFTCPT_VARIANTS (default "NATA"), COOP_MT_MODES (default "shared task class") and
#   METHODS (default "zsclip softcpt coop_mt coop cocoop linear_probe dualviewmi kgcoop")
#   choose what runs; ZS_SEEDS (1) the zero-shot seeds; WORKERS / GPUS / EXECUTOR / OPTS
#   as in scripts/common.sh.
source "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || die "usage: bash scripts/compare_all.sh DATASET \"SHOTS_LIST\" [BACKBONE]"
DATASET="$1"; SHOTS_LIST="$2"
BACKBONE="${3:-$(default_backbone "$DATASET")}"
for s in $SHOTS_LIST; do check_shots "$s"; done
dataset_config "$DATASET" >/dev/null

METHOD_ARGS=()
for m in ${METHODS:-zsclip softcpt coop_mt coop cocoop linear_probe dualviewmi kgcoop}; do
    case "$m" in
        softcpt) METHOD_ARGS+=("softcpt:$(echo "${SOFTCPT_VARIANTS:-NATA}" | tr ' ' ',')") ;;
        coop_mt) METHOD_ARGS+=("coop_mt:$(echo "${COOP_MT_MODES:-shared task class}" | tr ' ' ',')") ;;
        *) METHOD_ARGS+=("$m") ;;
    esac
done
grid_opts
# shellcheck disable=SC2086
"$PYTHON" "$REPO/tools/grid.py" --methods "${METHOD_ARGS[@]}" --datasets "$DATASET" \
    --shots $SHOTS_LIST --backbones "$BACKBONE" --seeds $SEEDS --zs-seeds ${ZS_SEEDS:-1} \
    --no-table "${GRID_ARGS[@]}" || echo "Some runs failed (listed above); the table shows the others"
[ -n "${DRY_RUN:-}" ] && exit 0
CANON="$(canonical_backbone "$BACKBONE")"
[ -z "${PRETRAINED:-}" ] || CANON="$CANON@$PRETRAINED"
# shellcheck disable=SC2086
"$PYTHON" "$REPO/tools/compare.py" --root "${OUT_ROOT:-output}" --dataset "$DATASET" \
    --backbone "$CANON" --shots $SHOTS_LIST --plot "${OUT_ROOT:-output}/$DATASET/compare_${CANON}.png"
