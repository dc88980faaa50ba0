#!/usr/bin/env bash
# promptsrc in the generalisation protocols (scripts/protocols.sh): its trainer and
# config schedule come from its declaration in trainers/promptsrc.py.
METHOD=promptsrc
source "$(dirname "${BASH_SOURCE[0]}")/../protocols.sh"
