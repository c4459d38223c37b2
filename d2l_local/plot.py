"""Figures for the book: live training curves, image grids, results over seeds.

All text in figures is ASCII, so no font is ever missing a glyph, on Colab
(which has no CJK fonts) or anywhere else; the Chinese chapters explain the
figures in their prose and captions.
"""

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from .data import TEXT_LABELS


def _check_ascii(*texts):
    for text in texts:
        if not str(text).isascii():
            raise ValueError(f"figure text must be ASCII so that every font can draw it: {text!r}")


def ascii_text(text):
    """``str(text)``, after checking that every font can draw it."""
    _check_ascii(text)
    return str(text)


class TrainingPlot:
    """Loss and accuracy per epoch, redrawn in place in a notebook."""

    SERIES = (("train_loss", "train loss"), ("train_acc", "train acc"), ("test_acc", "test acc"))

    def __init__(self, num_epochs):
        from IPython import display

        self.display = display
        self.records = []
        self.fig, self.ax = plt.subplots(figsize=(4.5, 3))
        self.num_epochs = num_epochs
        self.handle = display.display(self.fig, display_id=True)
        plt.close(self.fig)

    def add(self, record):
        self.records.append(record)
        self.ax.cla()
        epochs = [r["epoch"] for r in self.records]
        for key, label in self.SERIES:
            self.ax.plot(epochs, [r[key] for r in self.records], marker="o", label=label)
        self.ax.set(xlabel="epoch", xlim=(0.5, self.num_epochs + 0.5))
        self.ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
        self.ax.grid(alpha=0.3)
        self.ax.legend()
        self.handle.update(self.fig)


def show_images(images, titles=None, num_cols=8, scale=1.4, colors=None):
    """A grid of grey images (tensor N x H x W or N x 1 x H x W) with optional titles."""
    images = images.detach().float().cpu()
    if images.dim() == 4:
        images = images[:, 0]
    num_rows = (len(images) + num_cols - 1) // num_cols
    fig, axes = plt.subplots(num_rows, num_cols, figsize=(num_cols * scale, num_rows * scale * 1.25),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        ax.imshow(images[i], cmap="gray_r")
        if titles:
            _check_ascii(titles[i])
            ax.set_title(titles[i], fontsize=8, color=(colors[i] if colors else "black"))
    fig.tight_layout()
    return fig


def prediction_titles(true_labels, predicted_labels):
    """Titles "true / predicted" and colours (green right, red wrong)."""
    titles = [f"{TEXT_LABELS[t]}\n{TEXT_LABELS[p]}" for t, p in zip(true_labels, predicted_labels)]
    colors = ["green" if t == p else "red" for t, p in zip(true_labels, predicted_labels)]
    return titles, colors


def plot_mean_spread(ax, xs, runs, label):
    """Mean over seeds as a line, min..max over seeds as a band.

    ``runs`` is a list (one per seed) of equally long lists of values.
    """
    import numpy as np

    _check_ascii(label)
    values = np.asarray(runs, dtype=float)
    mean = values.mean(axis=0)
    ax.plot(xs, mean, marker="o", label=label)
    ax.fill_between(xs, values.min(axis=0), values.max(axis=0), alpha=0.2)
    return ax
