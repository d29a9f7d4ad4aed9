"""Linear warm-up, then polynomial decay (exponent 0.9), as SAMed and nnU-Net: a LambdaLR per iteration."""
from torch.optim.lr_scheduler import LambdaLR


class WarmupPoly:
    """The LR factor of iteration `it`. An object rather than a closure: LambdaLR saves its attributes
    in the scheduler state, so a shortened run (time budget) resumes with the same schedule."""

    def __init__(self, total_iterations, warmup_iterations):
        self.total = total_iterations
        self.warmup = warmup_iterations

    def last_epoch(self, iters_per_epoch):
        """The last epoch whose iterations the decay reaches (its LR is 0 after)."""
        return -(-self.total // iters_per_epoch) - 1

    def end_after(self, total_iterations, warmup_fraction):
        """Decay to 0 after `total_iterations` instead (the time budget fits fewer epochs); the warm-up
        shrinks with it when it would be more than `warmup_fraction` of the run."""
        self.total = total_iterations
        self.warmup = min(self.warmup, max(1, int(total_iterations * warmup_fraction)))

    def __call__(self, it):
        if it < self.warmup:
            return (it + 1) / self.warmup
        progress = (it - self.warmup) / max(1, self.total - self.warmup)
        return max(0.0, 1 - progress) ** 0.9


def warmup_poly(optimizer, total_iterations, warmup_iterations):
    """(scheduler, its WarmupPoly): the loop steps the first and shortens the second."""
    schedule = WarmupPoly(total_iterations, warmup_iterations)
    return LambdaLR(optimizer, schedule), schedule
