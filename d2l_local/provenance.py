"""Where a recorded number came from: commit, device, versions, date, command line."""

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def _git(*args):
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def device_name(device):
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads" + _cpu_model()


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f" ({line.split(':', 1)[1].strip()})"
    except OSError:
        pass
    return ""


def results_root():
    """Where results are read and written: ``$D2L_LOCAL_RESULTS`` when set, otherwise ``results/``."""
    folder = os.environ.get("D2L_LOCAL_RESULTS")
    return Path(folder) if folder else REPO / "results"


def provenance(device):
    """A dict that says which code, machine and software produced a result."""
    from . import __version__
    from .train import quick_mode

    # Changed code, not the results folder that experiments write to while they run.
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "device": device_name(device),
        "torch": torch.__version__,
        "d2l_local": __version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "quick": quick_mode(),
    }
