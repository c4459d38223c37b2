"""d2l_local: the helper package of the NiN book.

Its calls match the ``d2l`` functions the book's seeds use, so a reader can
swap ``from d2l import torch as d2l`` for ``import d2l_local as d2l``::

    train_iter, test_iter = d2l.load_data_fashion_mnist(128, resize=224)
    d2l.train_ch6(net, train_iter, test_iter, 10, 0.1, d2l.try_gpu())
"""

from .data import (
                   TEXT_LABELS,
                   DataError,
                   DeviceLoader,
                   find_data_dir,
                   get_fashion_mnist_labels,
                   load_data_fashion_mnist,
                   place_for_torchvision,
)
from .models import (
                   NiN,
                   PaperNiN,
                   build_model,
                   copy_weights,
                   count_parameters,
                   init_weights,
                   min_input_size,
                   mlpconv,
                   multiply_out,
                   nin_block,
                   product_bias_step_gains,
                   product_step_gains,
                   product_step_operators,
)
from .summary import block_shapes, layer_summary, training_flops_per_image
from .train import (
                   History,
                   TrainingDiverged,
                   evaluate_accuracy,
                   evaluate_accuracy_gpu,
                   load_checkpoint,
                   pick_precision,
                   quick_mode,
                   run_info,
                   train_ch6,
                   try_gpu,
)

__version__ = "0.1.0"

__all__ = [
    "TEXT_LABELS", "DataError", "DeviceLoader", "find_data_dir", "get_fashion_mnist_labels", "load_data_fashion_mnist",
    "place_for_torchvision", "NiN", "PaperNiN", "build_model", "copy_weights", "count_parameters", "init_weights",
    "min_input_size", "mlpconv", "multiply_out", "nin_block", "product_bias_step_gains", "product_step_gains",
    "product_step_operators", "block_shapes", "layer_summary", "training_flops_per_image",
    "History", "TrainingDiverged", "evaluate_accuracy", "evaluate_accuracy_gpu",
    "load_checkpoint", "pick_precision", "quick_mode", "run_info",
    "train_ch6", "try_gpu",
]
