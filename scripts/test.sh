#!/usr/bin/env bash
# The test suite (CPU only, no network beyond PyPI for the first set-up).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check src tests recipes benchmarks
exec .venv/bin/python -m pytest tests "$@"
