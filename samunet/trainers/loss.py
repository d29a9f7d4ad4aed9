"""Cross-entropy + soft Dice (SAMed's weights 0.2 / 0.8 by default).

Dice is computed per sample over the foreground classes, then averaged: a mean of per-sample terms keeps
DDP exact (each rank's mean over its share, averaged, equals the global mean). Background is left out of
Dice so that an all-background prediction is never a cheap optimum.

The loss runs on every training step at the full input size, so it has its own backward: autograd
through log-softmax, the one-hot product and the sums makes about a dozen passes over the
(B, K+1, S, S) logits, the closed form below a few (tests compare the two gradients). Forward + backward
on 8 x 3 x 256 x 256 bf16 logits on the reference CPU: 12.7 ms against 14.1 (cross-entropy alone: 6.9).
"""
import torch

TINY = torch.finfo(torch.float32).tiny


class _CeDiceLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, ce_weight, dice_weight, smooth):
        b, k = logits.shape[:2]
        probs = torch.softmax(logits, dim=1, dtype=torch.float32)
        at_target = probs.gather(1, target[:, None])  # (B, 1, H, W)
        # CE from the target's probability: a per-pixel term saturates at -log(TINY) ~ 87 where the
        # softmax underflows, which only the reported value sees (the gradient below is exact).
        ce = -at_target.clamp_min(TINY).log().mean()
        sample_class = (target + k * torch.arange(b, device=target.device).view(b, 1, 1)).view(-1)
        counts = torch.bincount(sample_class, minlength=b * k).view(b, k)[:, 1:]
        intersection = torch.bincount(sample_class, weights=at_target.view(-1), minlength=b * k).view(b, k)[:, 1:]
        denom = probs[:, 1:].sum(dim=(2, 3)) + counts + smooth
        dice = ((2 * intersection.float() + smooth) / denom).mean()
        # d loss / d probs[b, c] = a[b, c] * onehot + d[b, c] (both zero for background)
        scale = dice_weight / (b * (k - 1))
        a, d = probs.new_zeros(b, k), probs.new_zeros(b, k)
        a[:, 1:] = -2 * scale / denom
        d[:, 1:] = scale * (2 * intersection.float() + smooth) / denom**2
        ctx.save_for_backward(probs, target, at_target, a, d)
        ctx.ce_weight, ctx.logits_dtype = ce_weight, logits.dtype
        return ce_weight * ce + dice_weight * (1 - dice)

    @staticmethod
    def backward(ctx, grad_output):
        probs, target, at_target, a, d = ctx.saved_tensors
        b, k, h, w = probs.shape
        a, d = a * grad_output, d * grad_output
        ce = ctx.ce_weight / (b * h * w) * grad_output
        a_target_p = a.gather(1, target.view(b, -1)).view(b, 1, h, w) * at_target
        # softmax backward, grad_z = p * (g - sum_c p_c g_c) with g = a * onehot + d, plus CE's (p - onehot) / N
        inner = a_target_p + (probs * d.view(b, k, 1, 1)).sum(dim=1, keepdim=True)
        grad = probs * ((d + ce).view(b, k, 1, 1) - inner)
        grad.scatter_add_(1, target[:, None], a_target_p - ce)
        return grad.to(ctx.logits_dtype), None, None, None, None


def ce_dice_loss(logits, target, ce_weight=0.2, dice_weight=0.8, smooth=1e-5):
    """logits (B, K+1, H, W), target (B, H, W) int64 -> ce_weight * CE + dice_weight * (1 - foreground Dice)."""
    return _CeDiceLoss.apply(logits, target, ce_weight, dice_weight, smooth)


def mask_dice_bce_loss(logits, target, smooth=1e-5):
    """Prompted training (MedSAM's loss): logits (P, H, W), one mask per prompt, target (P, H, W) in {0, 1}
    -> mean over prompts of (1 - soft Dice) + mean binary cross-entropy."""
    logits, target = logits.float(), target.float()
    probs = torch.sigmoid(logits)
    intersection = (probs * target).sum(dim=(1, 2))
    dice = (2 * intersection + smooth) / (probs.sum(dim=(1, 2)) + target.sum(dim=(1, 2)) + smooth)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    return (1 - dice).mean() + bce
