"""Reconstruction pictures of a pretraining run: input | masked | reconstruction, one PNG per slice."""
import matplotlib

from samunet.file_io import atomic_write

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write_reconstructions(images, masked, reconstructed, folder, names):
    """images, masked, reconstructed: (B, H, W) arrays in [0, 1] (the first input channel)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
        for ax, picture, title in zip(axes, (images[i], masked[i], reconstructed[i]),
                                      ("input", "masked", "reconstruction")):
            ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title)
            ax.axis("off")
        fig.suptitle(name)
        fig.tight_layout()
        path = folder / f"{name}.png"
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths
