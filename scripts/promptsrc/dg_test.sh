#!/usr/bin/env bash
# PromptSRC, domain generalisation: evaluate the $XD_SOURCE model on each of $DG_TARGETS.
# usage: bash scripts/promptsrc/dg_test.sh SEED   (environment: see scripts/protocols.sh)
source "$(dirname "$0")/method.sh"
dg_test "$@"
