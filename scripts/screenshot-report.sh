#!/usr/bin/env bash
# Render a reproduction's report.html in headless Chromium and save a full-page PNG, to check that
# the page opens offline and every embedded figure renders.
#   usage: scripts/screenshot-report.sh RUN_DIR [OUT.png]
# Needs Debian's chromium (apt-get install chromium); nothing is fetched from the network.
set -euo pipefail
run_dir=${1:?usage: $0 RUN_DIR [OUT.png]}
out=${2:-$run_dir/report-screenshot.png}
html=$(realpath "$run_dir/report.html")
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "screenshot-report: no chromium found (apt-get install chromium)" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1200,7000 \
  --screenshot="$(realpath -m "$out")" "file://$html" 2>/dev/null
echo "wrote $out"
