"""progress.png: per-epoch curves of a training run, one panel per quantity."""
import matplotlib

from samunet.file_io import atomic_write

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_curves(panels, path):
    """panels: [({label: per-epoch values}, y limits or None), ...], drawn top to bottom."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.3 * len(panels)), sharex=True, squeeze=False)
    for ax, (curves, ylim) in zip(axes[:, 0], panels):
        for label, values in curves.items():
            ax.plot(range(len(values)), values, label=label)
        if ylim:
            ax.set_ylim(*ylim)
        ax.legend()
    axes[-1, 0].set_xlabel("epoch")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def plot_progress(log, path):
    """Fine-tuning: loss, pseudo Dice with its moving average, learning rate."""
    plot_curves([({"train loss": log["train_loss"]}, None),
                 ({"pseudo Dice (foreground mean)": log["pseudo_dice"], "moving average": log["ema_dice"]}, (0, 1)),
                 ({"learning rate": log["lr"]}, None)], path)
