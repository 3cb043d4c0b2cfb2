#!/bin/bash
# The randomized operator test (test/t/019_randomized.pl) for a long run:
#
#   bash test/bench/soak.sh [seconds] [seed]     # 600 s and a random seed by default
#
# It prints its seed first; the same seed replays the driver's choices.
# Ends like the test command: "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/../.."
export WEBHOOK_DURATION="${1:-600}"
export WEBHOOK_SEED="${2:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
echo "soak: $WEBHOOK_DURATION s, seed $WEBHOOK_SEED"
exec bash test/run.sh t/019_randomized.pl
