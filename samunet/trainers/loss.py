"""Cross-entropy + soft Dice (SAMed's weights 0.2 / 0.8 by default).

Dice is computed per sample over the foreground classes, then averaged: a mean of per-sample terms keeps
DDP exact (each rank's mean over its share, averaged, equals the global mean). Background is left out of
Dice so that an all-background prediction is never a cheap optimum.
"""
import torch
import torch.nn.functional as F


def soft_dice_per_sample(logits, target, smooth=1e-5):
    probs = torch.softmax(logits.float(), dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (probs * onehot).sum(dim=(2, 3))
    denom = probs.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3))
    return ((2 * inter + smooth) / (denom + smooth)).mean(dim=1)  # (B,)


def ce_dice_loss(logits, target, ce_weight=0.2, dice_weight=0.8):
    ce = F.cross_entropy(logits.float(), target)
    dice = soft_dice_per_sample(logits, target).mean()
    return ce_weight * ce + dice_weight * (1 - dice)
