#!/usr/bin/env bash
# The test command (README, .ci/run): install what the tests need, then check formatting,
# lint, and run every test of the workspace. Runs from any directory.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh test
# The lab's Debian base image (mmdebstrap, cached per day under ~/.cache/fks-bootstrap/base):
# built here so the test that pushes and pulls it stays short.
echo "[INFO] base image" >&2
scripts/base-image.sh >/dev/null

echo "[INFO] cargo fmt --check" >&2
cargo fmt --all -- --check
echo "[INFO] cargo clippy --all-targets -- -D warnings" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "[INFO] the operator CLI builds on macOS (scripts/check-portable.sh)" >&2
scripts/check-portable.sh
echo "[INFO] tests" >&2
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    cargo test --workspace --locked --doc
else
    cargo test --workspace --locked --no-fail-fast
fi
