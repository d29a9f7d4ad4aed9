"""Linear warm-up, then polynomial decay (exponent 0.9), as SAMed and nnU-Net: a LambdaLR per iteration."""
from torch.optim.lr_scheduler import LambdaLR


class WarmupPoly:
    """The LR factor of iteration `it`. An object rather than a closure: LambdaLR saves its attributes
    in the scheduler state, so a re-fitted run (time budget) resumes with the same schedule."""

    def __init__(self, total_iterations, warmup_iterations):
        self.total = total_iterations
        self.warmup = warmup_iterations
        # where a re-fitted decay starts (end_after), and the factor it starts from
        self.refit_iteration = None
        self.refit_factor = None

    def end_after(self, now, total_iterations):
        """From iteration `now` on, decay from the factor it has to 0 at `total_iterations` instead (a time
        budget fits fewer or more iterations than planned): the LR neither jumps nor stops short of 0."""
        factor = self(now)
        self.refit_iteration, self.refit_factor = now, factor
        self.total = total_iterations

    def __call__(self, it):
        if self.refit_iteration is not None and it >= self.refit_iteration:
            progress = (it - self.refit_iteration) / max(1, self.total - self.refit_iteration)
            return self.refit_factor * max(0.0, 1 - progress) ** 0.9
        if it < self.warmup:
            return (it + 1) / self.warmup
        progress = (it - self.warmup) / max(1, self.total - self.warmup)
        return max(0.0, 1 - progress) ** 0.9


def warmup_poly(optimizer, total_iterations, warmup_iterations):
    """(scheduler, its WarmupPoly): the loop steps the first and re-fits the second."""
    schedule = WarmupPoly(total_iterations, warmup_iterations)
    return LambdaLR(optimizer, schedule), schedule
