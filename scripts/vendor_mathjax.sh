#!/usr/bin/env bash
# Re-create book_ext/static/mathjax/ (the book's offline MathJax) from the npm registry.
# Only needed to change the MathJax version: the result is committed to the repository,
# so building the book never needs the network.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${MATHJAX_VERSION:-3.2.2}"
DEST=book_ext/static/mathjax
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "mathjax@$VERSION" >/dev/null && tar xzf "mathjax-$VERSION.tgz")
rm -rf "$DEST"
mkdir -p "$DEST/output/chtml/fonts"
cp "$TMP/package/es5/tex-chtml-full.js" "$DEST/"
cp -r "$TMP/package/es5/output/chtml/fonts/woff-v2" "$DEST/output/chtml/fonts/"
cp "$TMP/package/LICENSE" "$DEST/LICENSE"
{
  echo "MathJax $VERSION (npm package \"mathjax\", Apache-2.0, see LICENSE), vendored by scripts/vendor_mathjax.sh:"
  echo "es5/tex-chtml-full.js and the CommonHTML woff-v2 fonts it loads, nothing else."
  echo "sha256 of the npm tarball: $(sha256sum "$TMP/mathjax-$VERSION.tgz" | cut -d' ' -f1)"
} > "$DEST/VERSION.txt"
echo "vendored MathJax $VERSION into $DEST ($(du -sh "$DEST" | cut -f1))"
