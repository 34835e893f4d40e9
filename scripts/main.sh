#!/usr/bin/env bash
# The main job: train plain HSTU and HSTU + genre-prior heads on real MovieLens-100K
# (3 seeds, K=1 and K=8 split protocols), evaluate on test and print the results table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/ggr-hf compare --config recipes/configs/ml100k_main.yaml \
  --seeds 0 1 2 --split-ks 1 8 --output-dir "${GGR_OUTPUT_DIR:-outputs/main}" --overwrite "$@"
