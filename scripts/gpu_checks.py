"""The checks that need a GPU, in one command: ``python scripts/gpu_checks.py [--device cuda]``.

Prints one JSON line per check, so a maintainer with a GPU (or a session that
borrows one for a few minutes) records everything that the CPU cannot show:

* ``bench``: ``python -m d2l_local bench`` as is, then with each ``--compile`` mode
  given (default: ``max-autotune``), side by side in one process;
* ``reproducible``: the 224x224 NiN trained twice from one seed on a few hundred
  images, with and without ``deterministic=True``: are the two runs' weights
  bitwise equal?
"""

import argparse
import json
import os
import time
from unittest import mock

import torch

from d2l_local import NiN, load_data_fashion_mnist, train_ch6, try_gpu
from d2l_local.bench import run_bench
from d2l_local.train import COMPILE_MODES


def same_weights_twice(device, deterministic):
    """Train the seeds' network twice from seed 0 (quick mode: 1 epoch on 512 images); equal weights?"""
    nets = []
    with mock.patch.dict(os.environ, D2L_LOCAL_QUICK="1"):
        for _ in range(2):
            train_iter, test_iter = load_data_fashion_mnist(128, resize=224, device=device)
            net = NiN()
            train_ch6(net, train_iter, test_iter, 1, 0.1, device, deterministic=deterministic, progress=False)
            nets.append(net)
    return all(torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="default: try_gpu()")
    parser.add_argument("--compile", nargs="*", default=["max-autotune"], choices=COMPILE_MODES,
                        help="torch.compile modes to bench besides eager (none: eager only)")
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else try_gpu()
    for compile in [False, *args.compile]:
        start = time.time()
        result = run_bench(device, compile=compile)
        print(json.dumps({"check": "bench", "seconds": round(time.time() - start, 1), **result}), flush=True)
    for deterministic in (True, False):
        equal = same_weights_twice(device, deterministic)
        print(json.dumps({"check": "reproducible", "device": str(device), "deterministic": deterministic,
                          "same_weights": equal, "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
