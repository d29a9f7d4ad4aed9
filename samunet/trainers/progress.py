"""Training log (text) and progress.png (loss, pseudo Dice with its moving average, learning rate)."""
import matplotlib

from samunet.file_io import atomic_write

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_progress(log, path):
    epochs = range(len(log["train_loss"]))
    fig, axes = plt.subplots(3, 1, figsize=(8, 10), sharex=True)
    axes[0].plot(epochs, log["train_loss"], label="train loss")
    axes[0].legend()
    axes[1].plot(epochs, log["pseudo_dice"], label="pseudo Dice (foreground mean)")
    axes[1].plot(epochs, log["ema_dice"], label="moving average")
    axes[1].set_ylim(0, 1)
    axes[1].legend()
    axes[2].plot(epochs, log["lr"], label="learning rate")
    axes[2].set_xlabel("epoch")
    axes[2].legend()
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
