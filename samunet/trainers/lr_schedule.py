"""Linear warm-up, then polynomial decay (exponent 0.9), as SAMed and nnU-Net: a LambdaLR per iteration."""
from torch.optim.lr_scheduler import LambdaLR


class WarmupPoly:
    """The LR factor of iteration `it`. An object rather than a closure: LambdaLR saves its attributes
    in the scheduler state, so a shortened run (time budget) resumes with the same schedule."""

    def __init__(self, total_iterations, warmup_iterations):
        self.total = total_iterations
        self.warmup = warmup_iterations

    def __call__(self, it):
        if it < self.warmup:
            return (it + 1) / self.warmup
        progress = (it - self.warmup) / max(1, self.total - self.warmup)
        return max(0.0, 1 - progress) ** 0.9


def warmup_poly(optimizer, total_iterations, warmup_iterations):
    return LambdaLR(optimizer, WarmupPoly(total_iterations, warmup_iterations))
