#!/usr/bin/env bash
# Vendor htmx for the operator console: npm pack the pinned version in a temporary directory,
# copy dist/htmx.min.js into node/console/static/ and record its version and SHA-256 in
# node/console/static/VERSION (tests/console/test_static.py checks the file against it).
#
#     bash scripts/vendor_htmx.sh 2.0.11      (make htmx HTMX_VERSION=2.0.11)
set -euo pipefail
version="${1:?usage: vendor_htmx.sh VERSION (e.g. 2.0.11)}"
here="$(cd "$(dirname "$0")/.." && pwd)"
static="$here/node/console/static"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "htmx.org@$version" >/dev/null && tar xzf "htmx.org-$version.tgz")
cp "$work/package/dist/htmx.min.js" "$static/htmx.min.js"
sum="$(sha256sum "$static/htmx.min.js" | cut -d' ' -f1)"
cat > "$static/VERSION" <<TEXT
htmx.min.js: htmx.org $version (npm), dist/htmx.min.js, licence 0BSD
sha256 $sum
refresh: make htmx (npm pack htmx.org@VERSION in a temp directory, copy dist/htmx.min.js here,
update this file; tests/console/test_static.py checks the checksum)
TEXT
echo "htmx $version vendored: sha256 $sum"
