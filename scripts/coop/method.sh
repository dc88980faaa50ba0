#!/usr/bin/env bash
# coop in the generalisation protocols (scripts/protocols.sh): its trainer and
# config schedule come from its declaration in trainers/coop.py.
METHOD=coop
source "$(dirname "${BASH_SOURCE[0]}")/../protocols.sh"
