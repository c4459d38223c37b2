"""Ship the Chinese glyphs the book needs: a subset of Noto Sans CJK SC as a WOFF2 web font.

REGENERATE (after any change to the book's Chinese text; tests/test_cjk_font.py says when)::

    .venv/bin/python scripts/subset_cjk_font.py

Needs Debian's ``fonts-noto-cjk`` (scripts/setup.sh installs it) and ``fonttools`` + ``brotli``
(requirements.txt). Commit everything it rewrites under ``book_ext/static/fonts/``.

The book must render Chinese on a machine without any CJK font, offline, so it carries its own:
this script collects every non-ASCII character the book can show and keeps, of Noto Sans CJK SC
Regular, the glyphs of those in CJK blocks (:data:`CJK_BLOCKS`): about 150 KB instead of 16 MB.
The rest (``©``, ``→``, curly quotes) lie outside the web font's ``unicode-range``: the Latin fonts
of the theme's stacks draw them, as they draw the English text. The characters come from

* the book's sources: every chapter notebook (``chapters/*/*.ipynb``: markdown and code cells and
  their stored outputs), every page in ``_toc.yml`` (``index.md``, ``api.md``), ``_toc.yml`` and
  ``_config.yml`` (part captions, the book title), ``book_ext/*.py`` (the Chinese interface labels
  there) and the docstrings of ``d2l_local`` (the API page);
* the interface strings of the Chinese pages that come from installed packages: the zh_CN message
  catalogs that book_ext/nin_book.py swaps in (Sphinx's, pydata-sphinx-theme's, sphinx-book-theme's)
  and sphinx-copybutton's zh-CN tooltips;
* a fixed set of common CJK punctuation (:data:`EXTRA_CHARACTERS`).

It writes, each atomically (temporary file, then ``os.replace``):

* ``noto-sans-sc-subset.woff2``: the subset font;
* ``noto-sans-sc-subset.css``: its ``@font-face`` (``unicode-range`` limited to the CJK blocks the subset
  covers, so it never draws Latin text) and the font put in the theme's base, heading and monospace
  font stacks (first: see the comment in the CSS); book_ext/nin_book.py adds it to every page;
* ``LICENSE-OFL.txt`` (the font's copyright and the SIL Open Font License 1.1 it comes under) and
  ``README.md`` (where the subset came from, how to regenerate it).

Running it twice with the same inputs writes the same bytes.

Usage::

    python scripts/subset_cjk_font.py            # regenerate book_ext/static/fonts/
    python scripts/subset_cjk_font.py --check    # exit 1 and list the characters the subset lacks
    python scripts/subset_cjk_font.py --list     # print the collected characters and exit
"""

from __future__ import annotations

import argparse
import ast
import gettext
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
FONT_DIR = ROOT / "book_ext" / "static" / "fonts"
FONT_FILE = FONT_DIR / "noto-sans-sc-subset.woff2"
LICENSE_FILE = FONT_DIR / "LICENSE-OFL.txt"
README_FILE = FONT_DIR / "README.md"
REGENERATE = ".venv/bin/python scripts/subset_cjk_font.py"

#: the source font: Debian's fonts-noto-cjk, and the face of Simplified Chinese in that collection
SOURCE_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
SOURCE_FAMILY = "Noto Sans CJK SC"
DEBIAN_PACKAGE = "fonts-noto-cjk"
DEBIAN_COPYRIGHT = Path("/usr/share/doc/fonts-noto-cjk/copyright")

#: common CJK punctuation (full-width forms), shipped whether or not the text uses it today
EXTRA_CHARACTERS = "，。、；：？！（）《》〈〉【】「」『』〔〕～　"

#: Unicode blocks of CJK scripts and punctuation: the font's unicode-range is made of those it covers
CJK_BLOCKS = (
    (0x2E80, 0x2EFF),  # CJK Radicals Supplement
    (0x2F00, 0x2FDF),  # Kangxi Radicals
    (0x2FF0, 0x2FFF),  # Ideographic Description Characters
    (0x3000, 0x303F),  # CJK Symbols and Punctuation
    (0x3040, 0x309F),  # Hiragana
    (0x30A0, 0x30FF),  # Katakana
    (0x3100, 0x312F),  # Bopomofo
    (0x3190, 0x31FF),  # Kanbun, Bopomofo Extended, CJK Strokes, Katakana Phonetic Extensions
    (0x3200, 0x33FF),  # Enclosed CJK Letters and Months, CJK Compatibility
    (0x3400, 0x4DBF),  # CJK Unified Ideographs Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0xFE10, 0xFE1F),  # Vertical Forms
    (0xFE30, 0xFE4F),  # CJK Compatibility Forms
    (0xFF00, 0xFFEF),  # Halfwidth and Fullwidth Forms
    (0x20000, 0x3134F),  # CJK Unified Ideographs Extensions B-G, Compatibility Supplement
)

#: zh_CN catalogs, as book_ext/nin_book.py loads them: gettext domain of each of its catalog groups
_CATALOG_DOMAINS = {"sphinx": "sphinx", "booktheme": "booktheme"}


def _load_book_ext(root: Path = ROOT):
    path = root / "book_ext" / "nin_book.py"
    spec = importlib.util.spec_from_file_location("_nin_book_for_fonts", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_NIN_BOOK = _load_book_ext()
#: the CSS family name of the subset (a name of our own, so that it never matches an installed font)
FAMILY = _NIN_BOOK.CJK_FONT_FAMILY
#: its style sheet, which book_ext/nin_book.py links from every page
CSS_FILE = ROOT / "book_ext" / "static" / _NIN_BOOK.CJK_FONT_CSS


def is_cjk(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in CJK_BLOCKS)


def _non_ascii(text: str) -> set[str]:
    return {ch for ch in text if ord(ch) > 127 and ch.isprintable()} - {"\ufeff"}


def _strings(value):
    """Every string inside a JSON-like value (a notebook output)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _add(found: dict[str, set[str]], text: str, source: str) -> None:
    for ch in _non_ascii(text):
        found.setdefault(ch, set()).add(source)


def _toc_files(root: Path) -> list[Path]:
    """The source file of every page listed in _toc.yml."""
    toc_path = root / "_toc.yml"
    if not toc_path.is_file():
        return []
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8")) or {}
    names = [toc.get("root")]

    def walk(entries):
        for entry in entries or []:
            if isinstance(entry, dict):
                names.append(entry.get("file"))
                walk(entry.get("sections"))
                walk(entry.get("chapters"))

    for part in toc.get("parts", []) or []:
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    files = []
    for name in filter(None, names):
        for suffix in ("", ".md", ".ipynb"):
            path = root / f"{name}{suffix}"
            if path.is_file():
                files.append(path)
                break
    return files


def _docstrings(path: Path) -> str:
    """The docstrings of a Python module (what autodoc puts on the API page)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except SyntaxError:
        return path.read_text(encoding="utf-8")
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            parts.append(ast.get_docstring(node) or "")
    return "\n".join(parts)


def source_characters(root: Path = ROOT) -> dict[str, set[str]]:
    """Non-ASCII characters of the book's own files: ``{char: {file, ...}}``."""
    found: dict[str, set[str]] = {}
    notebooks = sorted((root / "chapters").glob("*/*.ipynb"))
    pages = [p for p in _toc_files(root) if p not in notebooks]
    for path in notebooks + [p for p in pages if p.suffix == ".ipynb"]:
        label = path.relative_to(root).as_posix()
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            _add(found, cell.get("source", ""), label)
            for output in cell.get("outputs", []) or []:
                for text in _strings(output):
                    _add(found, text, label)
    for path in [p for p in pages if p.suffix != ".ipynb"] + [root / "_toc.yml", root / "_config.yml"]:
        if path.is_file():
            _add(found, path.read_text(encoding="utf-8"), path.relative_to(root).as_posix())
    for path in sorted((root / "book_ext").glob("*.py")):
        _add(found, path.read_text(encoding="utf-8"), path.relative_to(root).as_posix())
    for path in sorted((root / "d2l_local").rglob("*.py")):
        _add(found, _docstrings(path), path.relative_to(root).as_posix() + " (docstrings)")
    return found


def _package_of(path: str) -> str:
    parts = Path(path).parts
    return parts[parts.index("site-packages") + 1] if "site-packages" in parts[:-1] else str(path)


def interface_characters() -> dict[str, set[str]]:
    """Non-ASCII characters of the Chinese interface strings that installed packages supply."""
    from babel.messages.mofile import read_mo

    found: dict[str, set[str]] = {}
    for group, folders in _NIN_BOOK._locale_dirs().items():
        domain = _CATALOG_DOMAINS[group]
        for folder in folders:
            for mo_path in gettext.find(domain, str(folder), languages=["zh_CN"], all=True):
                with open(mo_path, "rb") as handle:
                    catalog = read_mo(handle)
                label = f"{_package_of(mo_path)}'s zh_CN catalog ({domain}.mo)"
                for message in catalog:
                    if not message.id or not message.string:
                        continue
                    strings = message.string if isinstance(message.string, (list, tuple)) else [message.string]
                    for text in strings:
                        _add(found, text, label)
    try:
        import sphinx_copybutton
    except ImportError:  # pragma: no cover - comes with jupyter-book
        return found
    script = Path(sphinx_copybutton.__file__).parent / "_static" / "copybutton.js_t"
    if script.is_file():
        block = re.search(r"'zh-CN'\s*:\s*\{(.*?)\}", script.read_text(encoding="utf-8"), re.S)
        if block:
            _add(found, block.group(1), "sphinx-copybutton zh-CN tooltips")
    return found


def collect_characters(root: Path = ROOT) -> dict[str, set[str]]:
    """Every non-ASCII character the book can show, with where it comes from."""
    found = source_characters(root)
    for ch, sources in interface_characters().items():
        found.setdefault(ch, set()).update(sources)
    for ch in EXTRA_CHARACTERS:
        found.setdefault(ch, set()).add("EXTRA_CHARACTERS in scripts/subset_cjk_font.py")
    return found


def font_characters(path: Path = FONT_FILE) -> set[str]:
    """The characters a font file maps to glyphs."""
    from fontTools.ttLib import TTFont

    with TTFont(path, lazy=True) as font:
        return {chr(code) for code in font.getBestCmap()}


def required_characters(root: Path = ROOT) -> dict[str, set[str]]:
    """The collected characters the subset must hold: those in :data:`CJK_BLOCKS`.

    The others (``©``, ``→``, curly quotes, dashes) are outside the font's ``unicode-range``, so the
    browser never takes them from it: the Latin fonts of the theme's stacks draw them, as they draw the
    English text.
    """
    return {ch: src for ch, src in collect_characters(root).items() if is_cjk(ch)}


def missing_characters(root: Path = ROOT, font: Path = FONT_FILE) -> dict[str, set[str]]:
    """CJK characters the book uses that the committed subset lacks: ``{char: {where it is used}}``."""
    have = font_characters(font) if font.is_file() else set()
    return {ch: src for ch, src in required_characters(root).items() if ch not in have}


def describe(chars) -> str:
    return " ".join(f"{ch} (U+{ord(ch):04X})" for ch in sorted(chars))


def unicode_ranges(codes) -> list[tuple[int, int]]:
    """The CJK blocks that hold at least one of these code points."""
    return [(lo, hi) for lo, hi in CJK_BLOCKS if any(lo <= c <= hi for c in codes)]


def css_text(codes) -> str:
    ranges = ", ".join(f"U+{lo:04X}-{hi:04X}" for lo, hi in unicode_ranges(codes))
    fallback = f'"{FAMILY}"'
    return f"""/* GENERATED by scripts/subset_cjk_font.py: do not edit, re-run it. */
/* The book's Chinese glyphs, shipped with it: a subset of {SOURCE_FAMILY} (SIL OFL 1.1, LICENSE-OFL.txt). */
@font-face {{
  font-family: {fallback};
  font-style: normal;
  font-weight: 400;
  font-display: swap;
  src: url("{FONT_FILE.name}") format("woff2");
  unicode-range: {ranges};
}}
/* FIRST in each stack: its unicode-range gives it the CJK characters only, so the Latin text keeps the
   theme's fonts, while the Chinese looks the same on every machine, with or without CJK fonts of its own.
   Not last: Chromium does not redraw text whose glyphs a system font lacked once a web font LATER in the
   stack has loaded (measured: the 600-weight sidebar caption and the search button stayed boxes).
   Bold text is synthesised from the regular weight. */
:root {{
  --pst-font-family-base: {fallback}, var(--pst-font-family-base-system);
  --pst-font-family-heading: {fallback}, var(--pst-font-family-base-system);
  --pst-font-family-monospace: {fallback}, var(--pst-font-family-monospace-system);
  /* Bootstrap's stacks, used by the theme's tooltips and popovers */
  --bs-font-sans-serif: {fallback}, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "Noto Sans",
    "Liberation Sans", Arial, sans-serif, "Apple Color Emoji", "Segoe UI Emoji", "Segoe UI Symbol",
    "Noto Color Emoji";
  --bs-font-monospace: {fallback}, SFMono-Regular, Menlo, Monaco, Consolas, "Liberation Mono", "Courier New",
    monospace;
}}
"""


def license_text(copyright_notice: str) -> str:
    """The SIL OFL 1.1 as Debian's fonts-noto-cjk ships it, after the font's own copyright notice."""
    if not DEBIAN_COPYRIGHT.is_file():
        raise SystemExit(f"{DEBIAN_COPYRIGHT} is missing: apt-get install {DEBIAN_PACKAGE}")
    # A machine-readable debian/copyright: paragraphs apart by blank lines; a stand-alone
    # "License: SIL-1.1" paragraph holds the text, its lines indented by one space, "." for blank.
    body = []
    for paragraph in re.split(r"\n\s*\n", DEBIAN_COPYRIGHT.read_text(encoding="utf-8")):
        lines = paragraph.strip("\n").splitlines()
        if len(lines) > 1 and lines[0].strip() == "License: SIL-1.1":
            body = ["" if line.strip() == "." else line[1:] for line in lines[1:]]
            break
    if not body:
        raise SystemExit(f"no 'License: SIL-1.1' paragraph in {DEBIAN_COPYRIGHT}")
    return (
        f"The files noto-sans-sc-subset.* in this folder are a subset of {SOURCE_FAMILY} Regular\n"
        "(https://github.com/notofonts/noto-cjk), made by scripts/subset_cjk_font.py.\n\n"
        f"{copyright_notice}\n\n" + "\n".join(body) + "\n"
    )


def _debian_version() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", DEBIAN_PACKAGE], capture_output=True, text=True, check=False
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def readme_text(font_name: str, font_version: str, count: int, glyphs: int, size: int, ranges: str) -> str:
    return f"""# The book's CJK web font

`noto-sans-sc-subset.woff2` holds the {count} CJK characters the book shows ({glyphs} glyphs,
{size / 1024:.0f} KiB), taken from {font_name} Regular ({font_version}), face
"{SOURCE_FAMILY}" of `{SOURCE_FONT}` in Debian's `{DEBIAN_PACKAGE}` {_debian_version()}.
It is licensed under the SIL Open Font License 1.1: see `LICENSE-OFL.txt`.
`noto-sans-sc-subset.css` declares it as `"{FAMILY}"` for {ranges} and puts it in the theme's
font stacks; book_ext/nin_book.py links it from every page (and hands it to MathJax).

All four files are written by `scripts/subset_cjk_font.py`. After a change to the book's Chinese text
(tests/test_cjk_font.py fails and names the characters), regenerate them and commit them:

    apt-get install {DEBIAN_PACKAGE}     # once; scripts/setup.sh does it
    {REGENERATE}
"""


def _write(path: Path, data: bytes) -> bool:
    """Write atomically; False (and nothing written) when the file already holds these bytes."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _face_number(path: Path, family: str) -> int:
    from fontTools.ttLib import TTCollection

    with TTCollection(path, lazy=True) as collection:
        for number, face in enumerate(collection.fonts):
            if face["name"].getDebugName(1) == family:
                return number
    raise SystemExit(f"{path} has no face named {family!r}")


def build(root: Path = ROOT, source: Path = SOURCE_FONT) -> int:
    from fontTools import subset
    from fontTools.ttLib import TTFont

    if not source.is_file():
        raise SystemExit(f"{source} is missing: apt-get install {DEBIAN_PACKAGE} (scripts/setup.sh does)")
    wanted = required_characters(root)
    font = TTFont(source, fontNumber=_face_number(source, SOURCE_FAMILY), recalcTimestamp=False)
    absent = {ch for ch in wanted if ord(ch) not in font.getBestCmap()}
    if absent:
        raise SystemExit(f"{SOURCE_FAMILY} has no glyph for {describe(absent)}")
    codes = sorted(ord(ch) for ch in wanted)

    options = subset.Options()
    options.flavor = "woff2"
    options.name_IDs = [0, 1, 2, 3, 4, 5, 6, 13, 14]  # the defaults, plus the license and its URL
    options.desubroutinize = True  # compresses better under WOFF2's Brotli
    # 'locl' would bring the Japanese, Korean and traditional Chinese forms of each character (almost
    # twice the glyphs); the book is written in simplified Chinese only.
    options.layout_features = [tag for tag in options.layout_features if tag != "locl"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=codes)
    subsetter.subset(font)
    names = font["name"]
    font_name = names.getDebugName(4) or SOURCE_FAMILY
    font_version = names.getDebugName(5) or "unknown version"
    copyright_notice = names.getDebugName(0) or ""
    buffer = io.BytesIO()
    font.flavor = "woff2"
    font.save(buffer)
    data = buffer.getvalue()
    glyphs = len(font.getGlyphOrder())
    font.close()

    ranges = ", ".join(f"U+{lo:04X}-{hi:04X}" for lo, hi in unicode_ranges(codes))
    changed = [
        path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        for path, content in (
            (FONT_FILE, data),
            (CSS_FILE, css_text(codes).encode()),
            (LICENSE_FILE, license_text(copyright_notice).encode()),
            (README_FILE, readme_text(font_name, font_version, len(codes), glyphs, len(data), ranges).encode()),
        )
        if _write(path, content)
    ]
    print(f"{FONT_FILE.relative_to(ROOT)}: {len(codes)} characters, {glyphs} glyphs, {len(data) / 1024:.0f} KiB; "
          + (f"rewrote {', '.join(changed)}" if changed else "unchanged"))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="list the characters the committed subset lacks")
    mode.add_argument("--list", action="store_true", help="print the collected characters")
    args = parser.parse_args(argv)
    if args.list:
        chars = collect_characters()
        print(f"{len(chars)} characters:\n" + "".join(sorted(chars)))
        return 0
    if args.check:
        missing = missing_characters()
        if missing:
            print(f"{FONT_FILE.relative_to(ROOT)} lacks {describe(missing)}; run: {REGENERATE}", file=sys.stderr)
            return 1
        print(f"{FONT_FILE.relative_to(ROOT)} covers every CJK character the book uses")
        return 0
    return build()


if __name__ == "__main__":
    sys.exit(main())
