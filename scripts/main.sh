#!/usr/bin/env bash
# Any registered method (python tools/methods.py lists them) on one dataset or suite,
# seeds $SEEDS (default 1 2 3), through tools/grid.py: finished runs skipped,
# interrupted ones resumed, a mean +- std table at the end.
# usage: bash scripts/main.sh METHOD DATASET SHOTS [BACKBONE] [METHOD ARGS ...]
#   e.g. bash scripts/main.sh METHOD fewshot44 16 rn50 VARIANT (python tools/methods.py
#   lists the methods, their variants and script arguments)
#   METHOD ARGS: the method's own arguments (its declaration's script_usage; most take
#   one VARIANT). The recipe (trainer config, epochs) comes from the method's
#   declaration, by backbone, shots and whether DATASET is a suite.
#   WORKERS=2 / GPUS="0 1 2" / EXECUTOR=slurm run the seeds at once; OPTS="KEY VALUE ..."
#   adds overrides (see scripts/common.sh).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
[ $# -ge 3 ] || die "usage: bash scripts/main.sh METHOD DATASET SHOTS [BACKBONE] [METHOD ARGS ...] (methods: python tools/methods.py)"
METHOD="$1"; DATASET="$2"; SHOTS="$3"; check_shots "$SHOTS"
BACKBONE="${4:-}"
[ -n "$BACKBONE" ] || BACKBONE="$(default_backbone "$DATASET")"
shift $(( $# < 4 ? $# : 4 ))
run_method "$METHOD" "$DATASET" "$SHOTS" "$BACKBONE" "$@"
