#!/usr/bin/env bash
# Build the HTML book into _build/html (`make book`).
# - warnings are errors (-W), with nitpicky cross-reference checks (-n); --keep-going lists them all;
# - every page is rebuilt (--all), so a warning in an unchanged page is never hidden by the cache;
# - nothing is executed (execute_notebooks: off) and nothing is downloaded: MathJax and the fonts
#   come from book_ext/static and the theme packages. Any attempt to reach the network fails fast
#   (proxies point at a closed local port), and the result is checked for remote fetches.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
JB="${JUPYTER_BOOK:-$(dirname "$PY")/jupyter-book}"

export http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9
export HTTP_PROXY=$http_proxy HTTPS_PROXY=$https_proxy no_proxy=127.0.0.1,localhost NO_PROXY=127.0.0.1,localhost

# The Colab links must agree with _config.yml (tests/test_book_structure.py fails otherwise).
"$PY" scripts/sync_notebook_headers.py --check >/dev/null ||
  echo "build_book.sh: WARNING: notebook header cells are out of date: run $PY scripts/sync_notebook_headers.py" >&2
rm -rf _build/html
"$JB" build . --builder html --all -W -n --keep-going
"$PY" scripts/check_offline_html.py _build/html
echo "book: $(pwd)/_build/html/index.html"
