#!/usr/bin/env bash
# Writes a student assignment: a self-contained copy of the workspace with the
# chosen solution regions replaced by todo!("…hint…"), and an ASSIGNMENT.md.
#
#   scripts/make-assignment.sh [--only betas,q_sample,…] OUT_DIR
# Tasks: betas q_sample time_embedding ddpm_step ddim_step guidance dpm_update flow_loss (default: all).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
only=""
if [ "${1:-}" = "--only" ]; then only="${2:?--only needs a list of tasks}"; shift 2; fi
[ $# = 1 ] || { echo "usage: scripts/make-assignment.sh [--only task,…] OUT_DIR" >&2; exit 2; }
python3 "$ROOT/scripts/classroom/kit.py" make --only "$only" "$1"
