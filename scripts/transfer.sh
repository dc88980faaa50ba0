#!/usr/bin/env bash
# MVLPT's source-to-target protocol (tools/transfer.py): train METHOD on the SOURCE suite
# (seeds $SEEDS, default 1 2 3), initialise every TARGET task from the source runs'
# best-val checkpoints averaged over the seeds, fine-tune each target task alone, and
# print the table (from scratch / source prompt without tuning / fine-tuned / gain).
# usage: bash scripts/transfer.sh SOURCE TARGET SHOTS [BACKBONE] [METHOD[:VARIANT]]
#   e.g. bash scripts/transfer.sh general10 plant6 16 vit_b16 mcoop
#        bash scripts/transfer.sh demo:DemoDigit,DemoParity demo:DemoMagnitude 2 tiny_vit coop
#   SOURCE / TARGET: a dataset config, ':TASK,TASK' picks tasks of a suite. METHOD: mcoop
#   (default), coop, softcpt, ... (any method whose trainable weights transfer).
#   WORKERS=2 runs two at once; OPTS="KEY VALUE ..." adds overrides; OUTPUT (default
#   output) is the output root; PRETRAINED=<tag> for OpenCLIP backbones.
source "$(dirname "$0")/common.sh"
[ $# -ge 3 ] || die "usage: bash scripts/transfer.sh SOURCE TARGET SHOTS [BACKBONE] [METHOD[:VARIANT]]"
SOURCE="$1"; TARGET="$2"; SHOTS="$3"; check_shots "$SHOTS"
BACKBONE="${4:-$(default_backbone "${TARGET%%:*}")}"
METHOD="${5:-mcoop}"  # MVLPT's own prompt method
# shellcheck disable=SC2086
exec "$PYTHON" "$REPO/tools/transfer.py" --source "$SOURCE" --target "$TARGET" \
    --shots "$SHOTS" --backbone "$BACKBONE" --method "$METHOD" --seeds $SEEDS \
    --data "$DATA" --output-root "${OUTPUT:-output}" --workers "${WORKERS:-1}" \
    ${PRETRAINED:+--pretrained "$PRETRAINED"} --opts ${OPTS:-}
