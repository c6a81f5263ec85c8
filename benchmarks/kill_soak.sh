#!/usr/bin/env bash
# Soak test of crash safety (issue 8): 100 seeded SIGKILLs at random moments of runs and resumes,
# each killed file opened and summarised, every completed file compared bit for bit with an
# uninterrupted run. CI runs the same test with 20 kills.
#   bash benchmarks/kill_soak.sh [KILLS]
set -euo pipefail
cd "$(dirname "$0")/.."
DYNSIM_KILLS="${1:-100}" python -m pytest -q -s tests/test_reliability.py -k sigkill
