"""Execute chapter notebooks for real (not quick mode) and store their outputs in place.

    .venv/bin/python scripts/execute_notebooks.py                 # every chapter
    .venv/bin/python scripts/execute_notebooks.py chapters/en/04_training.ipynb

The book renders these stored outputs; it never executes at build time. A
notebook that fails is left untouched and the script exits non-zero.
"""

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent


def execute(path, timeout=4 * 3600):
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.time()
    client.execute()
    tmp = path.with_name(f".{path.name}.part")
    nbformat.write(notebook, tmp)
    os.replace(tmp, path)
    print(f"executed {path.relative_to(REPO)} in {time.time() - start:.0f} s", flush=True)


def main(paths):
    if os.environ.get("D2L_LOCAL_QUICK", "0") not in ("", "0"):
        sys.exit("refusing to store quick-mode outputs: unset D2L_LOCAL_QUICK")
    paths = [Path(p).resolve() for p in paths] or sorted((REPO / "chapters").glob("*/*.ipynb"))
    failed = []
    for path in paths:
        try:
            execute(path)
        except Exception as err:  # noqa: BLE001 - report every failing notebook, then fail
            print(f"FAILED {path}: {err}", file=sys.stderr)
            failed.append(path)
    if failed:
        sys.exit(f"{len(failed)} notebook(s) failed")


if __name__ == "__main__":
    main(sys.argv[1:])
