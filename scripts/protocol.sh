#!/usr/bin/env bash
# One step of a generalisation protocol for any method that declares it
# (python tools/methods.py lists each method's protocols).
# usage: bash scripts/protocol.sh METHOD STEP ARGS ...
#   STEP: base2new_train DATASET SEED | base2new_test DATASET SEED | xd_train SEED |
#         xd_test DATASET|all SEED | dg_test SEED
#   e.g. bash scripts/protocol.sh METHOD base2new_train demo 1
#   Environment as in scripts/protocols.sh (SHOTS, BACKBONE, OUT_ROOT, XD_SOURCE, ...).
[ $# -ge 2 ] || { echo "error: usage: bash scripts/protocol.sh METHOD STEP ARGS ... (STEP: base2new_train base2new_test xd_train xd_test dg_test)" >&2; exit 2; }
METHOD="$1"; STEP="$2"; shift 2
case "$STEP" in
    base2new_train|base2new_test|xd_train|xd_test|dg_test) ;;
    *) echo "error: unknown STEP '$STEP'; use base2new_train base2new_test xd_train xd_test dg_test" >&2; exit 2 ;;
esac
source "$(dirname "${BASH_SOURCE[0]}")/protocols.sh"
case "$STEP" in
    base2new_train) b2n_train "$@" ;;
    base2new_test) b2n_test "$@" ;;
    xd_train) xd_train "$@" ;;
    xd_test) xd_test "$@" ;;
    dg_test) dg_test "$@" ;;
esac
