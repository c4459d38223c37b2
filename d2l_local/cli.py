"""``python -m d2l_local {train,data,bench,experiment}``."""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .models import INITS


def device_arg(name):
    """``--device``'s type: a device this machine has (cpu, and cuda, cuda:0 ... with GPUs), else a usage error."""
    count = torch.cuda.device_count()
    available = ["cpu", *(["cuda"] if count else []), *(f"cuda:{i}" for i in range(count))]
    if name not in available:
        raise argparse.ArgumentTypeError(f"no device {name!r} here; available: {', '.join(available)}")
    return torch.device(name)


def _device(device):
    from .train import try_gpu

    return device or try_gpu()


def cmd_train(args):
    from . import data, models, train

    if args.resume and not Path(args.checkpoint).exists():  # the first run of a job that may be resumed later
        print(f"[d2l_local] no checkpoint at {args.checkpoint}, starting fresh")
    size = args.resize or models.DEFAULT_SIZE[args.model]
    device = _device(args.device)
    train_iter, test_iter = data.load_data_fashion_mnist(args.batch_size, resize=size, device=device,
                                                         seed=args.seed)
    net = models.build_model(args.model, num_1x1=args.num_1x1, linear_1x1=args.linear_1x1, head=args.head,
                             input_size=size)
    history = train.train_ch6(net, train_iter, test_iter, args.epochs, args.lr, device, seed=args.seed,
                              init=args.init, precision=args.precision, momentum=args.momentum,
                              weight_decay=args.weight_decay, schedule=args.schedule,
                              clip_grad_norm=args.clip_grad_norm, compile=args.compile,
                              deterministic=args.deterministic,
                              checkpoint=args.checkpoint, resume=args.resume, history_path=args.json,
                              progress=not args.quiet)
    print(json.dumps(history.final))


def cmd_data(args):
    from . import data

    folder = data.find_data_dir(download=args.fetch)  # fetches only if no folder has the files
    sets = data.load_tensors(folder)  # verifies every SHA-256
    print(f"Fashion-MNIST: {folder} (verified: {len(sets['train'][1])} train, {len(sets['test'][1])} test images)")
    if args.torchvision_root:
        print(f"placed for torchvision: {data.place_for_torchvision(args.torchvision_root)}")


def cmd_bench(args):
    from .bench import run_bench

    result = run_bench(_device(args.device), steps=args.steps, warmup=args.warmup, compile=args.compile)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))


def cmd_experiment(args):
    from .experiments import run_experiment

    fresh = time.time() if args.fresh else False  # one moment for all names: shared runs train once
    for name in args.names:
        for path in run_experiment(name, args.preset, seeds=args.seeds, only=args.only, verify=args.verify,
                                   fresh=fresh, device=_device(args.device)):
            print(f"{'verified' if args.verify else 'wrote'} {path}")


def main(argv=None):
    from .data import DataError
    from .experiments import EXPERIMENTS, PRESETS, STABILITY
    from .models import MODELS
    from .train import COMPILE_MODES, TrainingDiverged

    compile_help = f"torch.compile the network; MODE: {', '.join(COMPILE_MODES)} (without MODE: default)"

    parser = argparse.ArgumentParser(prog="python -m d2l_local", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = train_parser = sub.add_parser("train", help="train a NiN on Fashion-MNIST")
    p.add_argument("--model", choices=sorted(MODELS), default="nin")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--resize", type=int, help="image side (default: 224 for nin, 28 for paper)")
    p.add_argument("--num-1x1", type=int, default=2)
    p.add_argument("--linear-1x1", action="store_true", help="no ReLU between a block's 1x1 layers")
    p.add_argument("--head", choices=["gap", "fc"], default="gap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=device_arg, help="cpu, cuda, cuda:1 ... (default: try_gpu())")
    p.add_argument("--init", choices=INITS, default="d2l_local")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    p.add_argument("--clip-grad-norm", type=float, help="scale each step's gradient to at most this norm")
    p.add_argument("--compile", nargs="?", const="default", default=False, choices=COMPILE_MODES,
                   metavar="MODE", help=compile_help)
    p.add_argument("--deterministic", action="store_true",
                   help="on a GPU, deterministic kernels only: the same seed gives the same run, more slowly")
    p.add_argument("--checkpoint", help="checkpoint file, written after every epoch")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument("--json", help="write the per-epoch history here")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("data", help="find, verify or fetch Fashion-MNIST and say where it is")
    p.add_argument("--fetch", action="store_true",
                   help="download into the cache if no folder has the files (needs internet)")
    p.add_argument("--torchvision-root", help="also place decompressed copies for torchvision/d2l here")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("bench", help="d2l_local against the seeds' d2l pipeline, side by side")
    p.add_argument("--device", type=device_arg)
    p.add_argument("--steps", type=int, help="timed steps (default: d2l_local.bench.STEPS for the device type)")
    p.add_argument("--warmup", type=int, help="warm-up steps (default: d2l_local.bench.STEPS for the device type)")
    p.add_argument("--compile", nargs="?", const="default", default=False, choices=COMPILE_MODES,
                   metavar="MODE", help=compile_help)
    p.add_argument("--json", action="store_true", help="one JSON line")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("experiment", help="run a recorded experiment and write results/NAME.json")
    p.add_argument("names", nargs="+", metavar="name", choices=[*EXPERIMENTS, *STABILITY, "all"])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    p.add_argument("--only", help="run one variant only (its label, e.g. num_1x1=2); for stability, one "
                   "initialisation, keeping the record's other runs")
    p.add_argument("--verify", action="store_true",
                   help="re-run and compare with the recorded results instead of overwriting them")
    p.add_argument("--fresh", action="store_true",
                   help="train every run again instead of reusing the runs kept in results/runs/")
    p.add_argument("--device", type=device_arg)
    p.set_defaults(func=cmd_experiment)

    args = parser.parse_args(argv)
    if args.command == "train" and args.resume and not args.checkpoint:
        train_parser.error("--resume needs --checkpoint FILE (the checkpoint to continue from)")
    try:
        args.func(args)
    except (DataError, ValueError, TrainingDiverged) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
