#!/usr/bin/env bash
# maple in the generalisation protocols (scripts/protocols.sh): its trainer and
# config schedule come from its declaration in trainers/maple.py.
METHOD=maple
source "$(dirname "${BASH_SOURCE[0]}")/../protocols.sh"
