#!/usr/bin/env bash
# Zero-shot CLIP with each task's hand-crafted template(s), through tools/grid.py.
# Nothing is trained, so results are stored as 0 shots whatever SHOTS says, and it runs
# once (the first seed of SEEDS; ZS_SEEDS for more).
# usage: bash scripts/zsclip/main.sh DATASET [SHOTS] [BACKBONE] [TEMPLATES]
#   TEMPLATES: task (default), task_ensemble, single, ensemble
# (A thin wrapper of scripts/main.sh zsclip; the declaration is in trainers/zsclip.py.)
source "$(dirname "$0")/../common.sh"
[ $# -ge 1 ] || die "usage: bash scripts/zsclip/main.sh DATASET [SHOTS] [BACKBONE] [TEMPLATES]"
exec bash "$REPO/scripts/main.sh" zsclip "$1" "${2:-0}" "${@:3}"
