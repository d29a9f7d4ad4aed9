"""Linear warm-up, then polynomial decay (exponent 0.9), as SAMed and nnU-Net: a LambdaLR per iteration."""
from torch.optim.lr_scheduler import LambdaLR


def warmup_poly(optimizer, total_iterations, warmup_iterations):
    def factor(it):
        if it < warmup_iterations:
            return (it + 1) / warmup_iterations
        progress = (it - warmup_iterations) / max(1, total_iterations - warmup_iterations)
        return max(0.0, 1 - progress) ** 0.9

    return LambdaLR(optimizer, factor)
