#!/bin/sh
# Refresh the page's vendored libraries from the npm registry (`make vendor`), or only check
# them (`make vendor-check`, `vendor.sh --check`).
#
# npm ci installs exactly package-lock.json's versions, checking each tarball against the
# lock's sha512 integrity; the builds the page loads and their licences are copied into
# marketstream/static/vendor/, and every copied file is checked against the SHA-256 list
# checked in beside them (SHA256SUMS). A new version: change package.json, run
# `npm install --package-lock-only` here, `make vendor UPDATE=1` (rewrites SHA256SUMS),
# look at the diff, commit.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../static/vendor"
check() { (cd "$out" && sha256sum --quiet --strict -c SHA256SUMS) && echo "vendor: every file matches SHA256SUMS"; }
if [ "${1:-}" = "--check" ]; then check; exit; fi
command -v npm >/dev/null || { echo "vendor: npm is needed to refresh the vendored files (make run is not)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
nm="$work/node_modules"
rm -rf "$out/lightweight-charts" "$out/msgpack"
mkdir -p "$out/lightweight-charts" "$out/msgpack"
cp "$nm/lightweight-charts/dist/lightweight-charts.standalone.production.mjs" "$nm/lightweight-charts/LICENSE" \
   "$out/lightweight-charts/"
# the standalone build bundles fancy-canvas (MIT, TradingView), whose package has no licence file: see README.md
grep -q '"license": "MIT"' "$nm/fancy-canvas/package.json"
# the one-file build (a classic script: globalThis.MessagePack); its ES modules are 17 files to fetch
cp "$nm/@msgpack/msgpack/dist.umd/msgpack.min.js" "$nm/@msgpack/msgpack/LICENSE" "$out/msgpack/"
if [ "${UPDATE:-}" = 1 ]; then
  (cd "$out" && find lightweight-charts msgpack -type f | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)
  echo "vendor: wrote $out/SHA256SUMS"
fi
check
