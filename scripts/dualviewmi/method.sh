#!/usr/bin/env bash
# dualviewmi in the generalisation protocols (scripts/protocols.sh): its trainer and
# config schedule come from its declaration in trainers/dualviewmi.py.
METHOD=dualviewmi
source "$(dirname "${BASH_SOURCE[0]}")/../protocols.sh"
