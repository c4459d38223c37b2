"""The book's CJK web font (book_ext/static/fonts/, made by scripts/subset_cjk_font.py) holds every
Chinese character the book shows, and its style sheet matches it. Fast, no build, no font package
needed: it reads the committed subset. tests/browser checks that the browser really uses it."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_subset_module():
    path = ROOT / "scripts" / "subset_cjk_font.py"
    spec = importlib.util.spec_from_file_location("subset_cjk_font", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


subset_font = _load_subset_module()


def _where(sources: set[str]) -> str:
    listed = sorted(sources)
    return ", ".join(listed[:3]) + (f" and {len(listed) - 3} more" if len(listed) > 3 else "")


def test_font_files_are_committed():
    for path in (subset_font.FONT_FILE, subset_font.CSS_FILE, subset_font.LICENSE_FILE, subset_font.README_FILE):
        assert path.is_file(), f"{path.relative_to(ROOT)} is missing: run {subset_font.REGENERATE}"
    assert subset_font.FONT_FILE.read_bytes()[:4] == b"wOF2", "the subset is not a WOFF2 file"
    assert "SIL OPEN FONT LICENSE Version 1.1" in subset_font.LICENSE_FILE.read_text(encoding="utf-8")


def test_collector_sees_the_chinese_text():
    """The collector reads the places the Chinese comes from (a guard against it silently finding nothing)."""
    found = subset_font.required_characters()
    sources = {source for chars in found.values() for source in chars}
    assert any(s.startswith("chapters/zh/") for s in sources), sources
    assert "_toc.yml" in sources  # the part caption 中文
    assert "book_ext/nin_book.py" in sources  # the Chinese interface labels
    assert any("catalog" in s for s in sources), "the zh_CN message catalogs were not read"
    for ch in "网络中的文搜索跳转":
        assert ch in found, ch


def test_subset_covers_every_cjk_character_the_book_uses():
    missing = subset_font.missing_characters()
    if missing:
        lines = [f"  {ch} (U+{ord(ch):04X}) in {_where(missing[ch])}" for ch in sorted(missing)]
        pytest.fail(
            f"{subset_font.FONT_FILE.relative_to(ROOT)} lacks {len(missing)} character(s) the book uses, "
            f"which would show as empty boxes on machines without a CJK font:\n" + "\n".join(lines)
            + f"\nRegenerate the font and commit book_ext/static/fonts/: {subset_font.REGENERATE}"
        )


def test_subset_holds_only_cjk_characters():
    """Glyphs outside the font's unicode-range would never be used: only CJK blocks belong in it."""
    other = {ch for ch in subset_font.font_characters() if not subset_font.is_cjk(ch)}
    assert not other, f"not CJK: {subset_font.describe(other)}; run {subset_font.REGENERATE}"


def test_style_sheet_matches_the_subset():
    css = subset_font.CSS_FILE.read_text(encoding="utf-8")
    face = re.search(r"@font-face\s*\{(.*?)\}", css, re.S)
    assert face, "no @font-face"
    face = face.group(1)
    assert f'font-family: "{subset_font.FAMILY}"' in face
    assert f'url("{subset_font.FONT_FILE.name}")' in face, "the font must be referenced by a relative URL"
    assert not re.search(r"url\(\s*['\"]?(?:[a-z]+:)?//", css, re.I), "no remote URL in the style sheet"
    ranges = [
        (int(lo, 16), int(hi or lo, 16))
        for lo, hi in re.findall(r"U\+([0-9A-F]+)(?:-([0-9A-F]+))?", face.split("unicode-range:")[1], re.I)
    ]
    codes = {ord(ch) for ch in subset_font.font_characters()}
    outside = {chr(c) for c in codes if not any(lo <= c <= hi for lo, hi in ranges)}
    assert not outside, f"the unicode-range leaves out {subset_font.describe(outside)}"
    assert all(any(lo <= c <= hi for c in codes) for lo, hi in ranges), "a unicode-range block the font lacks"
    for var in ("--pst-font-family-base", "--pst-font-family-heading", "--pst-font-family-monospace"):
        assert re.search(rf'{var}:\s*"{re.escape(subset_font.FAMILY)}",', css), f"{var} does not start with the font"
    assert css == subset_font.css_text(sorted(codes)), (
        f"{subset_font.CSS_FILE.relative_to(ROOT)} is out of date: run {subset_font.REGENERATE}"
    )
