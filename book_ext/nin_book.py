"""Local Sphinx extension of the NiN book (registered in _config.yml, ``sphinx: local_extensions``).

It does three things:

* **API page.** The book root goes on ``sys.path`` so that autodoc imports this tree's ``d2l_local``.
  Docstrings may name a re-exported object by its short public path (``d2l_local.try_gpu``);
  such references are resolved to where autodoc documented it (``d2l_local.train.try_gpu``).
* **Offline assets.** ``book_ext/static`` joins ``html_static_path``: it holds the vendored MathJax 3
  (``_config.yml`` points ``mathjax_path`` at ``mathjax/tex-chtml-full.js``) and the book's CSS.
* **Chinese glyphs.** ``static/fonts/`` holds a subset of Noto Sans CJK SC (made by
  ``scripts/subset_cjk_font.py``) and its CSS, linked from every page (English pages show Chinese in
  the sidebar too). Its ``unicode-range`` is the CJK blocks; it heads the theme's font stacks and
  MathJax's family for the characters MathJax has no glyph for (Chinese in ``\\text{...}``), so that
  Chinese never depends on the reader's fonts.
* **Two languages in one book.** Sphinx builds a book in one ``language``; this book is English with a
  Chinese half. Every page under ``chapters/zh/`` gets ``<html lang="zh-CN">`` and is written with
  Chinese interface strings: while such a page is written, the ``sphinx`` and ``booktheme`` message
  catalogs (Sphinx's, pydata-sphinx-theme's and sphinx-book-theme's own zh_CN translations, all shipped
  in their packages) are swapped in, both for the HTML writer and for the Jinja templates. MyST-NB's
  "Show code cell ..." prompts, which have no catalog, are translated here.
* **Language switch.** Each chapter page starts with a link to its twin in the other language
  (``chapters/en/X`` <-> ``chapters/zh/X``) and declares it with ``<link rel="alternate" hreflang>``.
"""

from __future__ import annotations

import gettext
import html
import importlib
import sys
from pathlib import Path

import sphinx
import sphinx.locale
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.nodes import make_refnode

PACKAGE = "d2l_local"
STATIC_DIR = Path(__file__).resolve().parent / "static"

#: folder of each language's chapters, relative to the book root
CHAPTER_DIRS = {"en": "chapters/en/", "zh": "chapters/zh/"}
#: value of <html lang> and hreflang
HTML_LANG = {"en": "en", "zh": "zh-CN"}
#: the label of a link that leads TO that language (written in that language)
LANGUAGE_NAME = {"en": "English", "zh": "中文"}
#: the tooltip of that link, in the language of the page that shows it
SWITCH_TITLE = {"en": "Read this chapter in Chinese", "zh": "阅读本章的英文版"}

#: the CJK web font: its style sheet under static/ and its CSS family (scripts/subset_cjk_font.py writes both)
CJK_FONT_CSS = "fonts/noto-sans-sc-subset.css"
CJK_FONT_FAMILY = "NiN Noto Sans SC"

#: MyST-NB's hide-cell prompts (its defaults) in Chinese
NB_PROMPTS_ZH = {
    f"{verb} code cell {kind}": f"{verb_zh}代码单元{kind_zh}"
    for verb, verb_zh in (("Show", "显示"), ("Hide", "隐藏"))
    for kind, kind_zh in (("source", "源码"), ("content", "内容"), ("output", "输出"), ("outputs", "输出"))
}

#: interface strings the shipped zh_CN catalogs lack (or give in Taiwanese usage)
INTERFACE_ZH = {
    "Link to this heading": "链接到此标题",
    "Link to this definition": "链接到此定义",
    "Link to this equation": "链接到此公式",
    "Link to this table": "链接到此表格",
    "Link to this code": "链接到此代码",
    "Link to this image": "链接到此图片",
    "Color mode": "颜色模式",
    "System Settings": "跟随系统",
    "Launch interactive content": "启动交互式环境",
    "Launch on": "在线运行于",
    "Toggle primary sidebar": "切换主侧边栏",
    "Toggle secondary sidebar": "切换次侧边栏",
    "Print to PDF": "打印为 PDF",
    "Search this book...": "搜索本书...",
}

#: sphinx-togglebutton's hints (set by inline scripts, not catalogs) on Chinese pages
TOGGLE_HINTS_ZH = {"toggleHintShow": "点击显示", "toggleHintHide": "点击隐藏"}

# The message catalogs swapped in on Chinese pages: (namespace, catalog) as used by sphinx.locale.
_CATALOG_KEYS = (("general", "sphinx"), ("general", "booktheme"))


def page_language(docname: str) -> str:
    """``"zh"`` for pages under chapters/zh/, otherwise ``"en"`` (index and API pages are English-first)."""
    return "zh" if docname.startswith(CHAPTER_DIRS["zh"]) else "en"


def twin_docname(docname: str) -> str | None:
    """The same chapter in the other language, or None for pages that are not chapters."""
    for lang, folder in CHAPTER_DIRS.items():
        if docname.startswith(folder):
            other = "zh" if lang == "en" else "en"
            return CHAPTER_DIRS[other] + docname[len(folder):]
    return None


def _locale_dirs() -> dict[str, list[Path]]:
    """Where the zh_CN catalogs of Sphinx and the two themes live (all inside their packages)."""
    dirs = {"sphinx": [Path(sphinx.package_dir) / "locale"], "booktheme": []}
    try:
        import pydata_sphinx_theme

        dirs["sphinx"].append(Path(pydata_sphinx_theme.__file__).parent / "locale")
    except ImportError:  # pragma: no cover - the theme comes with jupyter-book
        pass
    try:
        import sphinx_book_theme

        dirs["booktheme"].append(Path(sphinx_book_theme.get_html_theme_path()) / "static" / "locales")
    except ImportError:  # pragma: no cover
        pass
    return dirs


class _Overrides(gettext.NullTranslations):
    """A few strings of our own, in front of the packages' catalogs."""

    def __init__(self, messages: dict[str, str]):
        super().__init__()
        self.messages = messages

    def gettext(self, message):
        if message in self.messages:
            return self.messages[message]
        return super().gettext(message)


def _load_zh_translators() -> dict[tuple[str, str], gettext.NullTranslations]:
    found = {}
    for catalog, dirs in _locale_dirs().items():
        chain = _Overrides(INTERFACE_ZH)
        for folder in dirs:
            try:
                # gettext returns a copy of its cached object, so add_fallback touches nobody else's.
                trans = gettext.translation(catalog, localedir=str(folder), languages=["zh_CN"])
            except OSError:
                continue
            chain.add_fallback(trans)
        found[("general", catalog)] = chain
    return found


class _Languages:
    """Which interface language is active, and the translators of each."""

    def __init__(self, app: Sphinx):
        self.app = app
        self.active = "en"
        self.original = {key: sphinx.locale.translators.get(key) for key in _CATALOG_KEYS}
        self.zh = _load_zh_translators()

    def activate(self, lang: str) -> None:
        if lang == self.active:
            return
        table = self.zh if lang == "zh" else self.original
        for key in _CATALOG_KEYS:
            translator = table.get(key) or self.original.get(key)
            if translator is None:
                sphinx.locale.translators.pop(key, None)
            else:
                sphinx.locale.translators[key] = translator
        templates = getattr(self.app.builder, "templates", None)
        environment = getattr(templates, "environment", None)
        if environment is not None and hasattr(environment, "install_gettext_translations"):
            environment.install_gettext_translations(
                table.get(("general", "sphinx")) or self.app.translator
            )
        self.active = lang


_STATE: dict[int, _Languages] = {}


def _languages(app: Sphinx) -> _Languages:
    if id(app) not in _STATE:
        _STATE[id(app)] = _Languages(app)
    return _STATE[id(app)]


class TranslateNotebookPrompts(SphinxPostTransform):
    """Chinese "Show code cell ..." prompts on Chinese pages (after MyST-NB's HideInputCells, 199)."""

    default_priority = 250
    formats = ("html",)

    def run(self, **kwargs) -> None:
        if page_language(self.env.docname) != "zh":
            return
        for node in self.document.findall(nodes.Element):
            for key in ("prompt_show", "prompt_hide"):
                value = node.get(key) if key in node.attributes else None
                if isinstance(value, str) and value in NB_PROMPTS_ZH:
                    node[key] = NB_PROMPTS_ZH[value]


def _resolve_reexport(app: Sphinx, env, node, contnode):
    """``d2l_local.NAME`` -> the documented ``d2l_local.MODULE.NAME`` (Sphinx knows no re-exports)."""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith(PACKAGE + "."):
        return None
    name = target[len(PACKAGE) + 1:]
    if "." in name:
        return None
    try:
        package = importlib.import_module(PACKAGE)
    except ImportError:
        return None
    module = getattr(getattr(package, name, None), "__module__", None)
    if not module or not module.startswith(PACKAGE + "."):
        return None
    entry = env.get_domain("py").objects.get(f"{module}.{name}")
    if entry is None:
        return None
    return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, f"{module}.{name}")


def _add_static_path(app: Sphinx, config) -> None:
    if str(STATIC_DIR) not in config.html_static_path:
        config.html_static_path.append(str(STATIC_DIR))


def _mathjax_cjk_fallback(app: Sphinx, config) -> None:
    """MathJax draws the characters its fonts lack (Chinese in ``\\text{...}``) in ``unknownFamily``:
    the book's CJK font goes before MathJax's default (serif), its unicode-range leaves the rest to serif."""
    mathjax = dict(config.mathjax3_config or {})
    chtml = dict(mathjax.get("chtml") or {})
    chtml.setdefault("unknownFamily", f'"{CJK_FONT_FAMILY}", serif')
    mathjax["chtml"] = chtml
    config.mathjax3_config = mathjax


def _on_doctree_resolved(app: Sphinx, doctree, docname: str) -> None:
    # The HTML writer turns this doctree into the page body right after this event: switch the
    # catalogs now so that its strings ("Link to this heading", admonition titles) match the page.
    _languages(app).activate(page_language(docname))


def _on_page_context(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    lang = page_language(pagename)
    _languages(app).activate(lang)
    if lang == "zh":
        context["language"] = HTML_LANG["zh"]  # pydata-sphinx-theme's <html lang="...">
        context["lang_attr"] = HTML_LANG["zh"]  # Sphinx's basic theme
        # jupyter-book sets this theme option, so sphinx-book-theme does not translate it itself
        context["theme_search_bar_text"] = INTERFACE_ZH["Search this book..."]
    twin = twin_docname(pagename)
    if twin is None or twin not in app.env.found_docs or "body" not in context:
        return
    other = "zh" if lang == "en" else "en"
    href = html.escape(context["pathto"](twin), quote=True)
    context["metatags"] = context.get("metatags", "") + (
        f'\n<link rel="alternate" hreflang="{HTML_LANG[other]}" href="{href}" />'
    )
    switch = (
        f'<nav class="nin-lang-switch" aria-label="{html.escape(SWITCH_TITLE[lang])}">'
        f'<a class="reference internal nin-lang-link" href="{href}" hreflang="{HTML_LANG[other]}" '
        f'lang="{HTML_LANG[other]}" title="{html.escape(SWITCH_TITLE[lang])}">'
        f'<i class="fa-solid fa-language" aria-hidden="true"></i> {LANGUAGE_NAME[other]}</a></nav>\n'
    )
    context["body"] = switch + context["body"]


def _tidy_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Each script once (some extensions register their inline scripts twice, and a second
    ``const THEBE_JS_URL`` is a SyntaxError); none of sphinx-thebe's when the thebe launch button is off
    (thebe itself would come from a CDN, so it cannot work in an offline book anyway)."""
    if "script_files" not in context:
        return
    launch = (app.config.html_theme_options or {}).get("launch_buttons") or {}
    drop_thebe = not launch.get("thebe")
    seen, kept = set(), []
    for script in context["script_files"]:
        filename = getattr(script, "filename", script) or ""
        attributes = getattr(script, "attributes", {}) or {}
        body = attributes.get("body", "")
        if drop_thebe and ("sphinx-thebe" in filename or "THEBE_JS_URL" in body):
            continue
        if body and page_language(pagename) == "zh":
            for name, text in TOGGLE_HINTS_ZH.items():
                if body.startswith(f"let {name} = "):
                    body = f"let {name} = '{text}';"
                    script = type(script)(None, priority=script.priority, body=body)
                    attributes = script.attributes
        key = (filename, tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def _on_build_finished(app: Sphinx, exception) -> None:
    state = _STATE.pop(id(app), None)
    if state is not None:
        state.activate("en")


def setup(app: Sphinx) -> dict:
    # The API page documents the d2l_local of this very tree (autodoc imports it), installed or not.
    if str(app.srcdir) not in sys.path:
        sys.path.insert(0, str(app.srcdir))
    app.connect("config-inited", _add_static_path)
    app.connect("config-inited", _mathjax_cjk_fallback)
    app.connect("doctree-resolved", _on_doctree_resolved, priority=100)
    # Before the themes' own handlers (priority 500), which read the catalogs.
    app.connect("html-page-context", _on_page_context, priority=100)
    # After every handler that adds scripts (Sphinx adds MathJax at 500).
    app.connect("html-page-context", _tidy_scripts, priority=900)
    app.connect("build-finished", _on_build_finished)
    app.connect("missing-reference", _resolve_reexport)
    app.add_post_transform(TranslateNotebookPrompts)
    app.add_css_file("nin-book.css")
    app.add_css_file(CJK_FONT_CSS)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": False}
