"""Prompts -> the tensors SAM's prompt encoder takes, in as few decoder calls as possible.

Prompts with and without a box, or with and without points, need different token sequences, so they are
decoded in separate groups; within a group, point lists are padded to one length with SAM's "not a point"
label (-1), which the prompt encoder embeds as padding.
"""
from dataclasses import dataclass

import torch

NOT_A_POINT = -1


@dataclass
class PromptGroup:
    members: list  # positions in the prompt list
    slice_index: torch.Tensor  # (P,) which image embedding each prompt is decoded with
    boxes: torch.Tensor = None  # (P, 4)
    points: tuple = None  # ((P, N, 2) coordinates, (P, N) labels)


def prompt_groups(prompts, device, slice_position=None):
    """Group `prompts` for decoding. `slice_position` maps a prompt's slice index to the row of the
    embeddings it is decoded with (default: the slice index itself)."""
    groups = {}
    for i, p in enumerate(prompts):
        groups.setdefault((p.box is not None, bool(p.points)), []).append(i)
    out = []
    for (has_box, has_points), members in groups.items():
        chosen = [prompts[i] for i in members]
        rows = [p.slice_index if slice_position is None else slice_position[p.slice_index] for p in chosen]
        group = PromptGroup(members, torch.tensor(rows, dtype=torch.long, device=device))
        if has_box:
            group.boxes = torch.tensor([p.box for p in chosen], dtype=torch.float32, device=device)
        if has_points:
            n = max(len(p.points) for p in chosen)
            coords = torch.zeros(len(chosen), n, 2)
            labels = torch.full((len(chosen), n), NOT_A_POINT, dtype=torch.long)
            for row, p in enumerate(chosen):
                for j, (x, y, positive) in enumerate(p.points):
                    coords[row, j] = torch.tensor([float(x), float(y)])
                    labels[row, j] = int(positive)
            group.points = (coords.to(device), labels.to(device))
        out.append(group)
    return out


def class_probabilities(prompts, mask_probabilities, num_outputs, shape, device=None):
    """Per-prompt mask probabilities -> (B, K+1, H, W) class probabilities for B = shape[0] slices.

    A class's probability is the largest of its prompts' (several boxes of one class are a union),
    background is 1 minus the largest class probability, and the whole is normalised: a pixel goes to a
    class where that class's mask is above 0.5 and above every other class's. Slices without prompts
    are background."""
    probs = torch.zeros((shape[0], num_outputs, *shape[1:]), device=device)
    for prompt, p in zip(prompts, mask_probabilities):
        target = probs[prompt.slice_index, prompt.label]
        torch.maximum(target, p, out=target)
    probs[:, 0] = 1 - probs[:, 1:].amax(dim=1)
    return probs / probs.sum(dim=1, keepdim=True)


def in_prompt_order(groups, outputs):
    """The per-group outputs of prompt_groups' groups -> one list in the order of the original prompts."""
    ordered = [None] * sum(len(g.members) for g in groups)
    for group, out in zip(groups, outputs):
        for member, value in zip(group.members, out):
            ordered[member] = value
    return ordered
