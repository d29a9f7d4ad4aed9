"""`linear` head: one linear classifier per embedding token (a 1x1 convolution); upsampled by the model."""
from torch import nn


class LinearHead(nn.Module):
    always_frozen = ()
    class_specific = ()
    uses_prompts = False

    def __init__(self, parts, num_classes):
        super().__init__()
        self.num_outputs = num_classes + 1
        self.classifier = nn.Conv2d(parts.embed_dim, self.num_outputs, 1)

    def forward(self, embeddings):
        return self.classifier(embeddings)
