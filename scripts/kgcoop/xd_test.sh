#!/usr/bin/env bash
# KgCoOp, cross-dataset: evaluate the $XD_SOURCE model on DATASET (all: every one of $XD_TARGETS).
# usage: bash scripts/kgcoop/xd_test.sh DATASET|all SEED   (environment: see scripts/protocols.sh)
source "$(dirname "$0")/method.sh"
xd_test "$@"
