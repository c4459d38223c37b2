"""The book's structure: both languages hold the same chapters running the same code, every table of
contents entry exists, and every notebook's Colab header agrees with the repository URL in _config.yml.
Fast, no network, no build needed."""

from __future__ import annotations

import importlib.util
import io
import sys
import tokenize
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
LANGUAGES = ("en", "zh")
SOURCE_SUFFIXES = (".md", ".ipynb")


def _load_sync_module():
    path = ROOT / "scripts" / "sync_notebook_headers.py"
    spec = importlib.util.spec_from_file_location("sync_notebook_headers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sync_headers = _load_sync_module()


def notebook_names(lang: str) -> list[str]:
    return sorted(p.name for p in (CHAPTERS / lang).glob("*.ipynb"))


def program_tokens(source: str) -> tuple:
    """The code of a cell without its comments, blank lines and layout: ``(type, text)`` tokens.

    IPython magics and shell escapes (``%timeit``, ``!pip``) are kept as their raw lines, since they
    are not Python; a cell that Python's tokenizer cannot read falls back to comparing its lines with
    ``#`` comments cut off.
    """
    lines = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith(("%", "!")):
            lines.append(f"__magic__({stripped!r})")  # keep it, as one opaque token
        else:
            lines.append(line)
    text = "\n".join(lines) + "\n"
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
    try:
        tokens = tuple(
            (tok.type, tok.string)
            for tok in tokenize.generate_tokens(io.StringIO(text).readline)
            if tok.type not in skip
        )
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return tuple(
            ("line", line.split("#", 1)[0].rstrip()) for line in text.splitlines() if line.split("#", 1)[0].strip()
        )
    # a trailing NEWLINE/DEDENT run is layout too
    while tokens and tokens[-1][0] in (tokenize.NEWLINE, tokenize.DEDENT):
        tokens = tokens[:-1]
    return tokens


def code_programs(path: Path) -> list[tuple]:
    """One token tuple per code cell that holds code (cells with only comments or blank lines drop out)."""
    nb = nbformat.read(path, as_version=4)
    programs = [program_tokens(cell.source) for cell in nb.cells if cell.cell_type == "code"]
    return [p for p in programs if p]


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def test_tokenizer_ignores_comments_blank_lines_and_layout():
    en = "# Build the model\nnet = nin(10)  # ten classes\n\n\nprint(net( X ))\n"
    zh = "# 构建模型\nnet = nin(10)  # 十个类别\nprint(net(X))\n# 结束"
    assert program_tokens(en) == program_tokens(zh)
    assert program_tokens("x = 1") != program_tokens("x = 2")
    assert program_tokens("s = '# not a comment'") != program_tokens("s = ''")
    assert program_tokens("%matplotlib inline\nx = 1") == program_tokens("%matplotlib inline\n# 注释\nx = 1")
    assert program_tokens("# only a comment\n\n") == ()


def test_both_languages_hold_the_same_notebooks():
    en, zh = notebook_names("en"), notebook_names("zh")
    assert en, "chapters/en holds no notebook"
    assert en == zh, f"only in en: {sorted(set(en) - set(zh))}; only in zh: {sorted(set(zh) - set(en))}"


@pytest.mark.parametrize("name", notebook_names("en") or ["(no notebooks)"])
def test_twin_notebooks_run_the_same_program(name):
    en_path, zh_path = CHAPTERS / "en" / name, CHAPTERS / "zh" / name
    if not en_path.exists():
        pytest.fail("chapters/en holds no notebook")
    if not zh_path.exists():
        pytest.fail(f"{name} has no Chinese twin (test_both_languages_hold_the_same_notebooks says more)")
    en, zh = code_programs(en_path), code_programs(zh_path)
    for i, (a, b) in enumerate(zip(en, zh)):
        assert a == b, (
            f"{name}: code cell {i + 1} (counting cells with code) differs between en and zh "
            "beyond comments and blank lines"
        )
    assert len(en) == len(zh), f"{name}: {len(en)} code cells in en, {len(zh)} in zh"


def test_every_toc_entry_exists():
    missing = [f for f in toc_files() if not any((ROOT / (f + s)).is_file() for s in SOURCE_SUFFIXES)]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_every_chapter_is_in_the_toc():
    listed = set(toc_files())
    for lang in LANGUAGES:
        for name in notebook_names(lang):
            assert f"chapters/{lang}/{Path(name).stem}" in listed, f"chapters/{lang}/{name} is missing from _toc.yml"


def test_repository_url_is_written_once_in_config():
    repo = sync_headers.read_repository(ROOT)
    assert repo.url.startswith("https://github.com/")
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert config["execute"]["execute_notebooks"] == "off"


def test_notebook_headers_agree_with_config():
    """Every notebook starts with its Colab header and set-up cells, built from _config.yml."""
    stale = sync_headers.sync(check=True, root=ROOT)
    assert not stale, (
        f"out of date: {[str(p.relative_to(ROOT)) for p in stale]}; "
        "run: .venv/bin/python scripts/sync_notebook_headers.py"
    )
    repo = sync_headers.read_repository(ROOT)
    for path in sync_headers.chapter_notebooks(ROOT):
        nb = nbformat.read(path, as_version=4)
        header, setup = nb.cells[0], nb.cells[1]
        lang = path.parent.name
        assert repo.colab_url(lang, path.name) in header.source
        assert f"../{'zh' if lang == 'en' else 'en'}/{path.name}" in header.source
        assert "colab-setup" in setup.metadata.get("tags", [])
        assert '"google.colab" in sys.modules' in setup.source
        assert repo.pip_url in setup.source and "--no-deps" in setup.source


def test_sync_touches_only_the_header_cells(tmp_path):
    """The sync script on a copy: adds the two cells, leaves every other cell and output alone, and a
    second run changes nothing."""
    (tmp_path / "_config.yml").write_text(
        "repository:\n  url: https://github.com/someone/some-book\n  branch: dev\n", encoding="utf-8"
    )
    folder = tmp_path / "chapters" / "zh"
    folder.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# 标题"),
        nbformat.v4.new_code_cell("print(1)", execution_count=3,
                                  outputs=[nbformat.v4.new_output("stream", name="stdout", text="1\n")]),
    ]
    path = folder / "01_x.ipynb"
    nbformat.write(nb, path)
    before = nbformat.read(path, as_version=4)

    assert sync_headers.sync([path], check=True, root=tmp_path) == [path]
    assert nbformat.read(path, as_version=4) == before  # check mode writes nothing
    assert sync_headers.sync([path], root=tmp_path) == [path]
    after = nbformat.read(path, as_version=4)
    assert after.cells[2:] == before.cells
    assert "https://colab.research.google.com/github/someone/some-book/blob/dev/chapters/zh/01_x.ipynb" in (
        after.cells[0].source
    )
    assert "git+https://github.com/someone/some-book@dev" in after.cells[1].source
    text = path.read_text(encoding="utf-8")
    assert sync_headers.sync([path], root=tmp_path) == []
    assert path.read_text(encoding="utf-8") == text

    # executing the notebook (a count on the set-up cell) is not a change either
    after.cells[1].execution_count = 1
    nbformat.write(after, path)
    assert sync_headers.sync([path], check=True, root=tmp_path) == []


ALL_NOTEBOOKS = [p.relative_to(ROOT) for lang in LANGUAGES for p in sorted((CHAPTERS / lang).glob("*.ipynb"))]


def _outputs_text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.append(str(output.get("data", {}).get("text/plain", "")))
    return "".join(parts)


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=str)
def test_committed_notebook_carries_a_full_execution(path):
    """Every code cell ran, in order, in one full (not quick) run whose first code cell printed the device and mode."""
    nb = nbformat.read(ROOT / path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = _outputs_text(code[0])
    assert "run_info()" in code[0].source and "device:" in first, f"{path}: the first code cell must print run_info()"
    assert "mode: full run" in first, f"{path}: stored outputs are not from a full run: {first.strip()!r}"
    counts = [c.get("execution_count") for c in code]
    assert None not in counts, f"{path}: {counts.count(None)} code cells were never executed"
    assert counts == sorted(counts) and len(set(counts)) == len(counts), f"{path}: cells not run top to bottom"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path}: stored outputs contain an error: {errors[0].get('ename')}"
    assert "PLACEHOLDER" not in "".join(c.source for c in nb.cells), f"{path}: unfinished text"
    assert "QUICK MODE" not in "".join(_outputs_text(c) for c in code), f"{path}: quick-mode outputs are stored"
