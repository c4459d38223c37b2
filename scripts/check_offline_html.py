"""List every resource the built book would fetch from outside the book itself.

Scans the HTML pages under a folder (default ``_build/html``) for scripts, style sheets, fonts,
images, frames and media whose address is absolute (``http://``, ``https://`` or ``//``), and the
CSS files for ``url(...)`` and ``@import`` of absolute addresses. Plain hyperlinks (``<a href>``) and
``<link rel="canonical|alternate">`` are fine: they are not fetched when a page is shown.
Exit status 1, with the list, when anything is found.

Usage: python scripts/check_offline_html.py [_build/html]
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REMOTE = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*((?:https?:)?//[^'")\s]+)""", re.IGNORECASE)
# <link rel=...> values that make the browser fetch something
FETCHING_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "preconnect", "dns-prefetch", "icon",
                 "shortcut", "apple-touch-icon", "manifest"}
FETCHING_ATTRS = {"script": ("src",), "img": ("src", "srcset"), "iframe": ("src",), "source": ("src", "srcset"),
                  "video": ("src", "poster"), "audio": ("src",), "embed": ("src",), "object": ("data",),
                  "track": ("src",), "input": ("src",)}


class _Scanner(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "link":
            rels = set((attrs.get("rel") or "").lower().split())
            if rels & FETCHING_RELS and REMOTE.match(attrs.get("href") or ""):
                self.found.append(f"<link rel={attrs.get('rel')!r} href={attrs.get('href')!r}>")
        for attr in FETCHING_ATTRS.get(tag, ()):
            value = attrs.get(attr) or ""
            if any(REMOTE.match(part) for part in value.split(",")):
                self.found.append(f"<{tag} {attr}={value!r}>")
        if "style" in attrs:
            self.found += [f"style url {u}" for u in CSS_URL.findall(attrs["style"] or "")]
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.found += [f"<style> url {u}" for u in CSS_URL.findall(data)]


def remote_references(html_dir: Path) -> list[str]:
    """``"page: reference"`` for every remote fetch found under ``html_dir``."""
    html_dir = Path(html_dir)
    problems = []
    for page in sorted(html_dir.rglob("*.html")):
        scanner = _Scanner()
        scanner.feed(page.read_text(encoding="utf-8", errors="replace"))
        problems += [f"{page.relative_to(html_dir)}: {item}" for item in scanner.found]
    for css in sorted(html_dir.rglob("*.css")):
        text = css.read_text(encoding="utf-8", errors="replace")
        problems += [f"{css.relative_to(html_dir)}: url {u}" for u in CSS_URL.findall(text)]
    return problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    html_dir = Path(argv[0]) if argv else ROOT / "_build" / "html"
    if not html_dir.is_dir():
        print(f"no built book at {html_dir}", file=sys.stderr)
        return 2
    problems = remote_references(html_dir)
    for line in problems:
        print(f"remote fetch: {line}")
    if problems:
        print(f"{len(problems)} remote fetch(es): the book would not work offline", file=sys.stderr)
        return 1
    print(f"offline check: no remote scripts, styles, fonts or images under {html_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
