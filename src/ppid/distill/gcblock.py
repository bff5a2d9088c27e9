"""GCNet global context block, eq. 2 of the paper (Cao et al. 2019).

Gc(F) = F + W_v2 ReLU(LN(W_v1 sum_j softmax_j(W_k F_j) F_j)): attention pooling to one context
vector per image, a bottleneck transform, broadcast-added to every position.
"""

import torch
import torch.nn as nn


class GCBlock(nn.Module):
    def __init__(self, channels, ratio=2):
        super().__init__()
        hidden = max(1, channels // ratio)
        self.key = nn.Conv2d(channels, 1, kernel_size=1)  # W_k
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),  # W_v1
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),  # W_v2
        )

    def forward(self, x):
        n, c, h, w = x.shape
        weights = torch.softmax(self.key(x).view(n, 1, h * w), dim=-1)  # over the N_p positions
        context = torch.bmm(x.view(n, c, h * w), weights.transpose(1, 2)).view(n, c, 1, 1)
        return x + self.transform(context)
