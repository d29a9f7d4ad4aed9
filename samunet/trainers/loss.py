"""Cross-entropy + soft Dice (SAMed's weights 0.2 / 0.8 by default).

Dice is computed per sample over the foreground classes, then averaged: a mean of per-sample terms keeps
DDP exact (each rank's mean over its share, averaged, equals the global mean). Background is left out of
Dice so that an all-background prediction is never a cheap optimum.
"""
import torch
import torch.nn.functional as F


def soft_dice_per_sample(log_probs, target, smooth=1e-5):
    """log_probs (B, K+1, H, W), target (B, H, W) -> (B,) mean foreground soft Dice."""
    probs = log_probs[:, 1:].exp()
    classes = torch.arange(1, log_probs.shape[1], device=target.device).view(1, -1, 1, 1)
    onehot = (target[:, None] == classes).to(probs.dtype)
    inter = (probs * onehot).sum(dim=(2, 3))
    denom = probs.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3))
    return ((2 * inter + smooth) / (denom + smooth)).mean(dim=1)


def ce_dice_loss(logits, target, ce_weight=0.2, dice_weight=0.8):
    log_probs = torch.log_softmax(logits.float(), dim=1)  # shared by both terms
    ce = F.nll_loss(log_probs, target)
    dice = soft_dice_per_sample(log_probs, target).mean()
    return ce_weight * ce + dice_weight * (1 - dice)
