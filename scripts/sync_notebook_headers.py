"""Write or refresh the two header cells of every chapter notebook.

For each ``chapters/{en,zh}/*.ipynb`` this script keeps, at the top of the notebook:

1. a markdown cell tagged ``colab-header``: an "Open in Colab" link to this very notebook and a link
   to its twin in the other language;
2. a code cell tagged ``colab-setup`` (and ``hide-input``, so the book shows it collapsed) that,
   on Google Colab only, installs ``d2l==1.0.3`` and this repository's ``d2l_local`` with
   ``pip install --no-deps`` (Colab's torch, torchvision and numpy stay as they are)
   and fetches Fashion-MNIST with ``python -m d2l_local data --fetch``; everywhere, it then prints
   ``d2l_local.run_info()``: the device and the run mode.

Both are built from ``repository:`` in ``_config.yml`` (url and branch), the only place the repository
URL is written. Only these two cells are ever touched: other cells, their outputs and the notebook's
metadata stay as they are, and the set-up cell keeps its own execution count and outputs. Running the
script twice changes nothing the second time.

Usage::

    python scripts/sync_notebook_headers.py            # rewrite the notebooks that are out of date
    python scripts/sync_notebook_headers.py --check    # exit 1 and list them, change nothing
    python scripts/sync_notebook_headers.py chapters/en/01_conv1x1.ipynb   # only these
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
LANGUAGES = ("en", "zh")
HEADER_TAG = "colab-header"
SETUP_TAG = "colab-setup"
SETUP_TAGS = [SETUP_TAG, "hide-input"]
D2L_REQUIREMENT = "d2l==1.0.3"


@dataclass(frozen=True)
class Repository:
    """The GitHub repository the notebooks are opened from on Colab."""

    owner: str
    name: str
    branch: str
    path_to_book: str = ""

    @property
    def url(self) -> str:
        return f"https://github.com/{self.owner}/{self.name}"

    def colab_url(self, lang: str, filename: str) -> str:
        book = f"{self.path_to_book.strip('/')}/" if self.path_to_book.strip("/") else ""
        return (
            f"https://colab.research.google.com/github/{self.owner}/{self.name}/blob/{self.branch}/"
            f"{book}chapters/{lang}/{filename}"
        )

    @property
    def pip_url(self) -> str:
        return f"git+{self.url}@{self.branch}"


def read_repository(root: Path = ROOT) -> Repository:
    """The ``repository:`` section of ``_config.yml``."""
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    section = config.get("repository") or {}
    url = str(section.get("url", "")).strip().rstrip("/")
    parsed = urlparse(url)
    parts = [p for p in parsed.path.split("/") if p]
    if parsed.scheme != "https" or parsed.netloc != "github.com" or len(parts) != 2:
        raise ValueError(f"_config.yml repository.url must look like https://github.com/OWNER/REPO, not {url!r}")
    name = parts[1][: -len(".git")] if parts[1].endswith(".git") else parts[1]
    return Repository(
        owner=parts[0],
        name=name,
        branch=str(section.get("branch") or "main"),
        path_to_book=str(section.get("path_to_book") or ""),
    )


def header_source(repo: Repository, lang: str, filename: str) -> str:
    """Markdown of the header cell (a Colab link and the link to the twin notebook)."""
    colab = repo.colab_url(lang, filename)
    if lang == "en":
        return (
            f"[Open in Colab]({colab}) · [中文版](../zh/{filename})\n"
            "\n"
            "*On Colab, run the set-up cell below first; elsewhere it only prints the device and the run mode.*"
        )
    return (
        f"[在 Colab 中打开]({colab}) · [English version](../en/{filename})\n"
        "\n"
        "*在 Colab 上请先运行下面的设置单元；在其他环境中它只打印运行设备和运行模式。*"
    )


def setup_source(repo: Repository, lang: str) -> str:
    """Code of the Colab set-up cell. Both languages run the same code; only the comments differ."""
    if lang == "en":
        comment = (
            "# Colab set-up. On Google Colab: install d2l and this book's d2l_local without their\n"
            "# dependencies, so Colab's own torch, torchvision and numpy stay as they are, then\n"
            "# download Fashion-MNIST. Anywhere else it installs nothing. Either way it ends\n"
            "# by printing the device and the run mode (quick or full).\n"
        )
    else:
        comment = (
            "# Colab 设置。仅在 Google Colab 上生效：用 --no-deps 安装 d2l 和本书的 d2l_local，\n"
            "# 不改动 Colab 自带的 torch、torchvision 和 numpy，然后下载 Fashion-MNIST 数据集。\n"
            "# 在其他环境中不安装任何东西。最后打印运行设备和运行模式（快速或完整）。\n"
        )
    return (
        comment + "import subprocess\n"
        "import sys\n"
        "\n"
        'if "google.colab" in sys.modules:\n'
        "    for step in (\n"
        f'        ["pip", "install", "-q", "--no-deps", "{D2L_REQUIREMENT}"],\n'
        f'        ["pip", "install", "-q", "--no-deps", "{repo.pip_url}"],\n'
        '        ["d2l_local", "data", "--fetch"],\n'
        "    ):\n"
        "        subprocess.run([sys.executable, \"-m\", *step], check=True)\n"
        "\n"
        "import d2l_local\n"
        "\n"
        "print(d2l_local.run_info())"
    )


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    """Every chapter notebook, English first."""
    return [p for lang in LANGUAGES for p in sorted((root / "chapters" / lang).glob("*.ipynb"))]


def _has_tag(cell, tag: str) -> bool:
    return tag in (cell.get("metadata", {}).get("tags") or [])


def _with_tags(metadata: dict, tags: list[str]) -> dict:
    metadata = copy.deepcopy(dict(metadata))
    current = list(metadata.get("tags") or [])
    metadata["tags"] = current + [t for t in tags if t not in current]
    return metadata


def _cell_id(nb, old, wanted: str) -> str:
    if old is not None and old.get("id"):
        return old["id"]
    taken = {c.get("id") for c in nb.cells}
    candidate, n = wanted, 1
    while candidate in taken:
        n += 1
        candidate = f"{wanted}-{n}"
    return candidate


def refreshed(nb, lang: str, filename: str, repo: Repository):
    """A copy of ``nb`` with its two header cells written or refreshed at the top."""
    nb = copy.deepcopy(nb)
    old_header = next((c for c in nb.cells if c.cell_type == "markdown" and _has_tag(c, HEADER_TAG)), None)
    old_setup = next((c for c in nb.cells if c.cell_type == "code" and _has_tag(c, SETUP_TAG)), None)
    with_ids = (nb.nbformat, nb.nbformat_minor) >= (4, 5)

    header = nbformat.from_dict(
        {
            "cell_type": "markdown",
            "metadata": _with_tags(old_header.metadata if old_header else {}, [HEADER_TAG]),
            "source": header_source(repo, lang, filename),
        }
    )
    setup = nbformat.from_dict(
        {
            "cell_type": "code",
            # The set-up cell keeps its own execution count and outputs: executing the notebooks must
            # not make this script see a change.
            "execution_count": old_setup.get("execution_count") if old_setup else None,
            "metadata": _with_tags(old_setup.metadata if old_setup else {}, SETUP_TAGS),
            "outputs": copy.deepcopy(old_setup.get("outputs", [])) if old_setup else [],
            "source": setup_source(repo, lang),
        }
    )
    if with_ids:
        header["id"] = _cell_id(nb, old_header, HEADER_TAG)
        setup["id"] = _cell_id(nb, old_setup, SETUP_TAG)
    nb.cells = [header, setup] + [c for c in nb.cells if c is not old_header and c is not old_setup]
    return nb


def sync(paths: list[Path] | None = None, check: bool = False, root: Path = ROOT) -> list[Path]:
    """Refresh the header cells of ``paths`` (default: every chapter); return the notebooks that
    changed (or, with ``check``, that would change)."""
    repo = read_repository(root)
    changed = []
    for path in paths if paths is not None else chapter_notebooks(root):
        path = Path(path)
        lang = path.parent.name
        if lang not in LANGUAGES:
            raise ValueError(f"{path}: not a chapter notebook (expected chapters/en or chapters/zh)")
        nb = nbformat.read(path, as_version=4)
        new = refreshed(nb, lang, path.name, repo)
        if new == nb:
            continue
        changed.append(path)
        if not check:
            nbformat.write(new, path)
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every chapters/{en,zh}/*.ipynb")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook is out of date")
    args = parser.parse_args(argv)
    changed = sync(args.notebooks or None, check=args.check)
    for path in changed:
        shown = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
        print(f"{'out of date' if args.check else 'updated'}: {shown}")
    if args.check and changed:
        print("run: python scripts/sync_notebook_headers.py", file=sys.stderr)
        return 1
    if not changed:
        print("all chapter notebooks are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
