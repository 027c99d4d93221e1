#!/usr/bin/env bash
# Runs every test of the workspace, starting the services the tests need.
# Safe to run again and again: it only starts what is not already running.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/services.sh
source scripts/services.sh
ensure_services

echo "==> cargo test --workspace --all-features"
cargo test --workspace --all-features
