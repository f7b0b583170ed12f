"""ResNet-18 and ResNet-50 building blocks, in torchvision's parameter naming (no torchvision needed).

Both preprocessing networks we load (BiSeNet's backbone, LibreFace's AU regressor) are
ResNet-18s whose weight files use these names; D3DFR's 3D face fit is a ResNet-50.
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


class Bottleneck(nn.Module):
    """ResNet-50's block (torchvision's "v1.5": the stride sits on the 3x3 convolution)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def bottleneck_stage(cin: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    """One of ResNet-50's four stages."""
    cout = width * Bottleneck.expansion
    return nn.Sequential(Bottleneck(cin, width, stride), *(Bottleneck(cout, width) for _ in range(blocks - 1)))


STAGES_50 = ((64, 64, 3, 1), (256, 128, 4, 2), (512, 256, 6, 2), (1024, 512, 3, 2))


class ResNet50Trunk(nn.Module):
    """torchvision's resnet50 up to the global average pool (no fc), same parameter names."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = stem()
        self.layer1, self.layer2, self.layer3, self.layer4 = (bottleneck_stage(*s) for s in STAGES_50)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3), keepdim=True)
