#!/usr/bin/env bash
# Zero-shot CLIP with each task's hand-crafted template(s), through tools/grid.py.
# Nothing is trained, so results are stored as 0 shots whatever SHOTS says, and one
# seed is enough (SEEDS defaults to 1 here).
# usage: bash scripts/zsclip/main.sh DATASET [SHOTS] [BACKBONE] [TEMPLATES]
#   TEMPLATES: task (default), task_ensemble, single, ensemble
SEEDS="${SEEDS:-1}"
source "$(dirname "$0")/../common.sh"
[ $# -ge 1 ] || die "usage: bash scripts/zsclip/main.sh DATASET [SHOTS] [BACKBONE] [TEMPLATES]"
DATASET="$1"; check_shots "${2:-0}"
BACKBONE="${3:-$(default_backbone "$DATASET")}"
TEMPLATES="${4:-task}"
case "$TEMPLATES" in task|task_ensemble|single|ensemble) ;;
    *) die "TEMPLATES must be task, task_ensemble, single or ensemble, got '$TEMPLATES'" ;; esac
run_grid zsclip "$TEMPLATES" "$DATASET" 0 "$BACKBONE"
