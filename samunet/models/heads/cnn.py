"""`cnn` head: a small convolutional upsampler on the image embedding (x4, like SAM's own decoder)."""
from torch import nn


class CnnHead(nn.Module):
    always_frozen = ()
    class_specific = ()
    uses_prompts = False

    def __init__(self, parts, num_classes):
        super().__init__()
        self.num_outputs = num_classes + 1
        c = parts.embed_dim
        self.layers = nn.Sequential(
            nn.Conv2d(c, c // 2, 3, padding=1),
            nn.GroupNorm(8 if c // 2 >= 8 else 1, c // 2),
            nn.GELU(),
            nn.ConvTranspose2d(c // 2, c // 4, 2, stride=2),
            nn.GELU(),
            nn.ConvTranspose2d(c // 4, c // 8, 2, stride=2),
            nn.GELU(),
            nn.Conv2d(c // 8, self.num_outputs, 1),
        )

    def forward(self, embeddings):
        return self.layers(embeddings)
