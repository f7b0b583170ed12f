"""Face parsing into CelebAMask-HQ's 19 classes (0 = background).

Default backend: BiSeNet as in zllrunning/face-parsing.PyTorch, whose ``79999_iter.pth`` the
authors use and publish. The network is written here in plain torch (a ResNet-18 context path,
attention refinement and feature fusion) with module names that match that file's keys, so it
loads without torchvision. Alternative backend: facer's FaRL CelebAMask-HQ parser, imported
lazily (it needs facer and torchvision).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import resnet
from ..model.checkpoint import load_strict, read_weights_file
from ..errors import MissingDependencyError

NUM_CLASSES = 19
CELEBAMASK_CLASSES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)
PARSE_SIZE = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Backbone(nn.Module):
    """ResNet-18 without its head; returns the 1/8, 1/16 and 1/32 feature maps."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = resnet.stem()
        self.layer1, self.layer2, self.layer3, self.layer4 = (resnet.stage(*s) for s in resnet.STAGES)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinement(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x):
        feat = self.conv(x)
        attention = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean(dim=(2, 3), keepdim=True))))
        return feat * attention


class ContextPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet = Backbone()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, kernel=1)

    def forward(self, x):
        feat8, feat16, feat32 = self.resnet(x)
        global_context = self.conv_avg(feat32.mean(dim=(2, 3), keepdim=True))
        up32 = F.interpolate(self.arm32(feat32) + global_context, feat16.shape[2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + up32, feat8.shape[2:], mode="nearest")
        return feat8, self.conv_head16(up16)


class FeatureFusion(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, kernel=1)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial, context):
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        attention = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean(dim=(2, 3), keepdim=True)))))
        return feat * attention + feat


class SegmentationHead(nn.Module):
    def __init__(self, cin: int, mid: int, classes: int):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, classes, 1, bias=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """BiSeNet with the ResNet's 1/8 features in place of a spatial path (as trained on CelebAMask-HQ)."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = SegmentationHead(256, 256, num_classes)
        # Auxiliary heads used in training; kept so that the published file loads strictly.
        self.conv_out16 = SegmentationHead(128, 64, num_classes)
        self.conv_out32 = SegmentationHead(128, 64, num_classes)

    def forward(self, x):
        feat8, context8 = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, context8))
        return F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=True)


def load_bisenet(path: str | os.PathLike, device: torch.device | str = "cpu") -> BiSeNet:
    state = read_weights_file(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # num_batches_tracked only counts training steps; files from older torch lack it.
    model = load_strict(BiSeNet(), state, str(path), "the BiSeNet face parser (79999_iter.pth)", optional=("num_batches_tracked",))
    return model.to(device).eval()


class BiSeNetParser:
    """CelebAMask-HQ labels for a face crop, as the authors compute them (512x512 input)."""

    def __init__(self, model: BiSeNet):
        self.model = model

    def parse(self, image: np.ndarray) -> np.ndarray:
        return self.parse_batch([image])[0]

    @torch.no_grad()
    def parse_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Labels of each image; the network sees them all, at 512x512, as one batch."""
        if not images:
            return []
        param = next(self.model.parameters())
        inputs = []
        for image in images:
            x = torch.tensor(image).permute(2, 0, 1)[None].float().div(255.0)
            if x.shape[2:] != (PARSE_SIZE, PARSE_SIZE):
                x = F.interpolate(x, (PARSE_SIZE, PARSE_SIZE), mode="bilinear", align_corners=False, antialias=True)
            inputs.append(x)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        logits = self.model(((torch.cat(inputs) - mean) / std).to(param.device, param.dtype))
        labels = logits.float().argmax(dim=1, keepdim=True).float()
        return [F.interpolate(labels[k:k + 1], image.shape[:2], mode="nearest")[0, 0].to(torch.uint8).cpu().numpy()
                for k, image in enumerate(images)]


class FacerParser:
    """facer's FaRL CelebAMask-HQ parser (``farl/celebm/448``); facer and torchvision must be installed."""

    def __init__(self, device: torch.device | str = "cpu"):
        try:
            import facer
        except ImportError as exc:
            raise MissingDependencyError(
                f"the facer parsing backend needs pyfacer (pip install pyfacer) and torchvision ({exc})"
            ) from exc
        self._facer = facer
        self.device = str(device)
        self.detector = facer.face_detector("retinaface/mobilenet", device=self.device)
        self.parser = facer.face_parser("farl/celebm/448", device=self.device)

    @torch.no_grad()
    def parse(self, image: np.ndarray) -> np.ndarray:
        batch = self._facer.hwc2bchw(torch.from_numpy(np.ascontiguousarray(image))).to(self.device)
        faces = self.detector(batch)
        labels = np.zeros(image.shape[:2], dtype=np.uint8)
        if len(faces.get("rects", [])) == 0:
            return labels
        faces = self.parser(batch, faces)
        per_face = faces["seg"]["logits"].softmax(dim=1).argmax(dim=1).cpu().numpy()
        for face_labels in per_face:  # class 0 is background in facer's label set too
            labels = np.where(labels == 0, face_labels.astype(np.uint8), labels)
        return labels
