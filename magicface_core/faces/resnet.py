"""ResNet-18's building blocks, in torchvision's parameter naming (no torchvision needed).

Both preprocessing networks we load (BiSeNet's backbone, LibreFace's AU regressor) are
ResNet-18s whose weight files use these names.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    """One of ResNet-18's four stages: two basic blocks, the first one changing size."""
    return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout))


def stem() -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)


STAGES = ((64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2))
