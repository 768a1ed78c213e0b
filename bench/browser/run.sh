#!/usr/bin/env bash
# The real-browser test on both runtimes: handoff-demo (daemon + handoff-front +
# mock-llm over HTTP/2 + TLS) driven by Debian's chromium through playwright-core.
# Needs /usr/bin/chromium (.ci/run installs it with apt), node and npm; not part of
# `cargo test`, so the workspace tests pass without them. Screenshots go to
# target/ci-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../.."

chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  echo "bench/browser/run.sh: $chromium not found (apt-get install -y chromium)" >&2
  exit 1
fi
(cd bench/browser && npm ci --no-audit --no-fund --loglevel=error)
# The binaries as `cargo test --workspace` builds them (the same features, so after
# that run this builds nothing): both daemons, handoff-demo, handoff-front, mock-llm.
cargo test --workspace --no-run --quiet
for runtime in tokio smol; do
  node bench/browser/test.mjs --demo target/debug/handoff-demo --runtime "$runtime" --artifacts target/ci-artifacts
done
ls target/ci-artifacts/browser-*.png
