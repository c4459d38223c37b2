"""The built book in a real headless Chromium, served from 127.0.0.1 only.

For the index, the API page and every chapter page in both languages: the math is typeset by the
book's own MathJax and its fonts load, every image loads, the console has no error, ``<html lang>`` is
right (``zh-CN`` on Chinese pages, whose interface labels are Chinese), the link to the other language
leads to the twin page, and no request leaves the loopback address. Chromium runs as on a machine without
any CJK font (fontconfig hides the installed ones): the Chinese must come from the book's own subset
web font (book_ext/static/fonts/), which must load, draw the Chinese text, and leave no character as a
missing-glyph box. Screenshots go to ``_build/screenshots/``. Needs ``_build/html`` (``make book``),
/usr/bin/chromium and /usr/bin/chromedriver (Debian's ``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

HTML_LANG = {"en": "en", "zh": "zh-CN"}
CJK_FONT_FAMILY = "NiN Noto Sans SC"  # book_ext/nin_book.py CJK_FONT_FAMILY
# fontconfig as on a reader's machine without CJK fonts: every installed font that covers Chinese,
# Japanese or Korean is hidden from Chromium, so the test sees what such a reader sees.
FONTCONFIG_WITHOUT_CJK = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">
<fontconfig>
  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>
  <selectfont><rejectfont>
    <pattern><patelt name="lang"><string>zh-cn</string></patelt></pattern>
    <pattern><patelt name="lang"><string>zh-tw</string></patelt></pattern>
    <pattern><patelt name="lang"><string>ja</string></patelt></pattern>
    <pattern><patelt name="lang"><string>ko</string></patelt></pattern>
  </rejectfont></selectfont>
</fontconfig>
"""
NETWORK_SCHEMES = ("http:", "https:", "ws:", "wss:", "ftp:", "//")  # data:, blob:, chrome:// stay inside


@pytest.fixture(autouse=True, scope="module")
def built_book():
    """The browser tests need the built book; without it they fail (a skip would pass without testing)."""
    if not (HTML / "index.html").is_file():
        pytest.fail(f"no built book in {HTML}: run `make book` first")


def book_pages() -> list[str]:
    """Docnames of the pages to open: every file in _toc.yml (index, the chapters, the API page)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        pages += [entry["file"] for entry in part.get("chapters", []) if "file" in entry]
    return pages


def page_language(docname: str) -> str:
    return "zh" if docname.startswith("chapters/zh/") else "en"


def twin(docname: str) -> str | None:
    for lang, other in (("en", "zh"), ("zh", "en")):
        prefix = f"chapters/{lang}/"
        if docname.startswith(prefix):
            return f"chapters/{other}/{docname[len(prefix):]}"
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def base_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def driver():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: apt-get install chromium chromium-driver (scripts/setup.sh does)")
    profile = tempfile.mkdtemp(prefix="nin-book-chromium-")
    fontconfig = Path(profile) / "fonts.conf"
    fontconfig.write_text(FONTCONFIG_WITHOUT_CJK, encoding="utf-8")
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-default-apps", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
        "--metrics-recording-only", "--window-size=1280,1000", f"--user-data-dir={profile}",
        # Belt and braces: even a request the checks below would catch cannot leave this machine.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(CHROMEDRIVER, env={**os.environ, "FONTCONFIG_FILE": str(fontconfig)})
    chrome = webdriver.Chrome(service=service, options=options)
    chrome.set_page_load_timeout(60)
    chrome.set_script_timeout(60)
    try:
        yield chrome
    finally:
        chrome.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _open(driver, url: str) -> None:
    driver.get_log("browser")  # drop what earlier pages left
    driver.get_log("performance")
    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")


MATH_SCRIPT = """
const done = arguments[arguments.length - 1];
const started = Date.now();
function report() {
  const math = [...document.querySelectorAll('.math')];
  return {math: math.length,
          typeset: math.filter(e => e.querySelector('mjx-container')).length,
          containers: document.querySelectorAll('mjx-container').length,
          errors: document.querySelectorAll('mjx-merror').length};
}
function wait() {
  if (!document.querySelector('.math')) { done(report()); return; }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    MathJax.startup.promise.then(() => document.fonts.ready).then(() => done(report()))
      .catch(e => done({error: String(e)}));
  } else if (Date.now() - started > 30000) {
    done({error: 'MathJax did not start within 30 s'});
  } else { setTimeout(wait, 50); }
}
wait();
"""

IMAGES_SCRIPT = """
const done = arguments[arguments.length - 1];
const images = [...document.images];
images.forEach(img => { if (img.loading === 'lazy') img.loading = 'eager'; });
const started = Date.now();
(function wait() {
  const pending = images.filter(img => !img.complete);
  if (pending.length && Date.now() - started < 20000) { setTimeout(wait, 50); return; }
  done({count: images.length,
        broken: images.filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.currentSrc || img.src)});
})();
"""

FONTS_SCRIPT = """
const done = arguments[arguments.length - 1];
document.fonts.ready.then(() => done([...document.fonts].filter(f => f.status === 'error')
  .map(f => f.family)));
"""


CJK_FONT_SCRIPT = """
const [family, selector] = arguments;
const done = arguments[arguments.length - 1];
const ideograph = /[\\u4e00-\\u9fff]/;
const frame = () => new Promise(resolve => requestAnimationFrame(() => requestAnimationFrame(resolve)));
(async () => {
  await document.fonts.ready;
  const faces = [...document.fonts].filter(f => f.family.replace(/["']/g, '') === family);
  await Promise.all(faces.filter(f => f.status === 'loading').map(f => f.loaded.catch(() => null)));
  await frame();
  // the element to look at: the first visible one of `selector` with Chinese in it; marked for DevTools
  const probe = [...document.querySelectorAll(selector)]
    .find(e => ideograph.test(e.textContent) && e.getClientRects().length);
  let sample = null;
  if (probe) {
    probe.setAttribute('data-nin-cjk-probe', '');
    sample = [...probe.textContent].filter(c => ideograph.test(c)).join('');
  }
  // every visible ideograph must be drawn full-width (1 em): a missing-glyph box is narrower
  const boxes = [];
  let drawn = 0;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, element = node.parentElement;
    if (!element || !ideograph.test(node.data) || element.closest('mjx-assistive-mml, .visually-hidden, .sr-only')
        || !element.getClientRects().length) continue;
    const style = getComputedStyle(element);
    if (style.visibility !== 'visible') continue;
    const size = parseFloat(style.fontSize);
    for (let i = 0; i < node.data.length; i++) {
      if (!ideograph.test(node.data[i])) continue;
      const range = document.createRange();
      range.setStart(node, i);
      range.setEnd(node, i + 1);
      const width = range.getBoundingClientRect().width;
      if (!width) continue;
      drawn++;
      if (width < 0.9 * size) boxes.push(`${node.data[i]} in <${element.localName} class="${element.className}">`);
    }
  }
  done({faces: faces.map(f => f.status), sample, drawn, boxes,
        check: sample ? document.fonts.check(`16px "${family}"`, sample) : null});
})().catch(e => done({error: String(e)}));
"""


def _check_cjk_font(driver, docname: str, lang: str) -> None:
    """The book's CJK subset is loaded and draws the Chinese; no Chinese character is a box."""
    # the Chinese to look at: the chapter's title on Chinese pages, the sidebar's 中文 part elsewhere
    selector = "article h1" if lang == "zh" else ".bd-sidebar-primary .caption-text"
    result = driver.execute_async_script(CJK_FONT_SCRIPT, CJK_FONT_FAMILY, selector)
    assert "error" not in result, f"{docname}: {result['error']}"
    assert result["faces"] == ["loaded"], (
        f"{docname}: the web font {CJK_FONT_FAMILY!r} is {result['faces'] or 'not declared'} "
        "(expected one face, loaded): is book_ext/static/fonts/noto-sans-sc-subset.css linked?"
    )
    assert result["sample"], f"{docname}: no Chinese text in {selector}"
    assert result["check"] is True, (
        f"{docname}: document.fonts.check says {CJK_FONT_FAMILY!r} cannot draw {result['sample']}"
    )
    assert result["drawn"] > 0
    assert not result["boxes"], f"{docname}: Chinese drawn as missing-glyph boxes: {result['boxes'][:20]}"
    # Which fonts Chromium really drew the probe's text with (DevTools protocol).
    driver.execute_cdp_cmd("DOM.enable", {})
    driver.execute_cdp_cmd("CSS.enable", {})
    try:
        root = driver.execute_cdp_cmd("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = driver.execute_cdp_cmd("DOM.querySelector", {"nodeId": root, "selector": "[data-nin-cjk-probe]"})
        fonts = driver.execute_cdp_cmd("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})["fonts"]
    finally:
        driver.execute_cdp_cmd("CSS.disable", {})
        driver.execute_cdp_cmd("DOM.disable", {})
    web = [f for f in fonts if f.get("isCustomFont") and f.get("postScriptName", "").startswith("NotoSansCJKsc")]
    assert web and web[0]["glyphCount"] >= len(result["sample"]), (
        f"{docname}: {result['sample']!r} was not drawn with the web font: {fonts}"
    )


def _requests(driver) -> list[str]:
    """Every URL the page asked for, from Chrome's DevTools network log."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message.get("method") == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


def test_built_html_fetches_nothing_remote():
    spec = importlib.util.spec_from_file_location("check_offline_html", ROOT / "scripts" / "check_offline_html.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.remote_references(HTML) == []


@pytest.mark.parametrize("docname", book_pages())
def test_page(driver, base_url, docname):
    page = HTML / f"{docname}.html"
    assert page.is_file(), f"{page} was not built"
    url = base_url + f"{docname}.html"
    _open(driver, url)
    lang = page_language(docname)

    math = driver.execute_async_script(MATH_SCRIPT)
    assert "error" not in math, f"{docname}: {math['error']}"
    assert math["typeset"] == math["math"], f"{docname}: MathJax typeset {math['typeset']} of {math['math']} formulas"
    assert math["errors"] == 0, f"{docname}: {math['errors']} MathJax errors"

    images = driver.execute_async_script(IMAGES_SCRIPT)
    assert not images["broken"], f"{docname}: images that did not load: {images['broken']}"
    failed_fonts = driver.execute_async_script(FONTS_SCRIPT)
    assert not failed_fonts, f"{docname}: fonts that did not load: {failed_fonts}"
    _check_cjk_font(driver, docname, lang)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{docname.replace('/', '_')}.png"))

    assert driver.execute_script("return document.documentElement.lang") == HTML_LANG[lang]
    placeholder = driver.execute_script(
        "const q = document.querySelector('input[name=\"q\"]'); return q ? q.placeholder : null;"
    )
    assert placeholder, f"{docname}: no search box"
    assert ("搜索" in placeholder) if lang == "zh" else ("Search" in placeholder), placeholder
    if lang == "zh":
        labels = driver.execute_script("return document.body.textContent")
        assert "跳转至主要内容" in labels, f"{docname}: the interface is not in Chinese"

    time.sleep(0.2)  # let late log entries arrive
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, f"{docname}: console errors: {severe}"
    requests = _requests(driver) + driver.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    outside = sorted({u for u in requests if u.lower().startswith(NETWORK_SCHEMES) and not u.startswith(base_url)})
    assert not outside, f"{docname}: requests that leave 127.0.0.1: {outside}"

    other = twin(docname)
    if other is None:
        return
    links = driver.find_elements(By.CSS_SELECTOR, "a.nin-lang-link")
    assert len(links) == 1, f"{docname}: expected one language link, found {len(links)}"
    expected = base_url + f"{other}.html"
    assert links[0].get_attribute("href") == expected
    assert links[0].get_attribute("hreflang") == HTML_LANG[page_language(other)]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(expected, timeout=10) as response:
        assert response.status == 200
    driver.execute_script("arguments[0].click()", links[0])
    WebDriverWait(driver, 30).until(lambda d: d.current_url == expected)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    assert driver.execute_script("return document.documentElement.lang") == HTML_LANG[page_language(other)]
    back = driver.find_elements(By.CSS_SELECTOR, "a.nin-lang-link")
    assert back and back[0].get_attribute("href") == url, f"{other} does not link back to {docname}"


def test_search(driver, base_url):
    """Sphinx's own search, offline: the index page's word 'Colab' is found in several pages."""
    _open(driver, base_url + "search.html?q=colab")
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.querySelectorAll('#search-results ul.search li').length") > 0
    )
    hits = driver.execute_script(
        "return [...document.querySelectorAll('#search-results ul.search li a')].map(a => a.getAttribute('href'))"
    )
    assert any(h.startswith("index.html") for h in hits), hits
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / "search.png"))
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, f"search page: console errors: {severe}"
