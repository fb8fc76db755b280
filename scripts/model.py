"""Networks of BF-Net (DESIGN.md section 2): building blocks, then the named networks.

Attribute names (``inc``, ``down1``, ``up1``, ``S1``, ``outc``, ...) follow the original
project's checkpoints (``../shared/original_checkpoints/*.txt``), so its released
state dicts load into these modules without any renaming.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- blocks

# The inner attribute names (double_conv, single_conv, maxpool_conv) are those of the original
# project's checkpoints, so that its state dicts load unchanged.

class DoubleConv(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> ReLU."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.double_conv(x)


class SingleConv(nn.Module):
    """conv3x3 -> BN -> ReLU."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.single_conv = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.single_conv(x)


class Down(nn.Module):
    """2x2 max-pool, then DoubleConv."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_ch, out_ch))

    def forward(self, x):
        return self.maxpool_conv(x)


class ChannelPairSum(nn.Module):
    """Sum channels 2k and 2k+1 into channel k (C -> C/2), then a BN + ReLU.

    One instance is applied to both the upsampled map and the skip of a dual-path block,
    so the two share this BatchNorm (as in the original).
    """

    def __init__(self, channels):
        super().__init__()
        self.activation = nn.Sequential(nn.BatchNorm2d(channels // 2), nn.ReLU(inplace=True))

    def forward(self, x):
        # Two strided slices added, not a view + sum over a size-2 dim: the same numbers, but
        # it keeps channels_last memory (the reduction was 23% of a CPU forward with it).
        return self.activation(x[:, 0::2] + x[:, 1::2])


class DualPathUp(nn.Module):
    """Generator up block: (channel-pair sums of u and skip) + DoubleConv([u, skip])."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv_bottom = SingleConv(in_ch, out_ch)
        self.add = ChannelPairSum(out_ch)
        self.conv = DoubleConv(2 * out_ch, out_ch)

    def forward(self, x, skip):
        u = F.interpolate(self.conv_bottom(x), scale_factor=2, mode="nearest")
        pair_path = torch.cat([self.add(u), self.add(skip)], dim=1)
        return pair_path + self.conv(torch.cat([u, skip], dim=1))


class PlainUp(nn.Module):
    """Discriminator up block: DoubleConv([skip, u])."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv_bottom = SingleConv(in_ch, out_ch)
        self.conv = DoubleConv(2 * out_ch, out_ch)

    def forward(self, x, skip):
        u = F.interpolate(self.conv_bottom(x), scale_factor=2, mode="nearest")
        return self.conv(torch.cat([skip, u], dim=1))


class SideOutput(nn.Module):
    """Deep-supervision head: ``steps`` x [upsample x2, conv c -> c/2, BN, ReLU], then 1x1 conv."""

    def __init__(self, in_ch, out_ch, steps):
        super().__init__()
        for i in range(steps):
            c = in_ch >> i
            self.add_module(f"side_block_{i + 1}", _SideBlock(c, c // 2))
        self.steps = steps
        self.side_output = nn.Conv2d(in_ch >> steps, out_ch, 1)

    def forward(self, x):
        for i in range(self.steps):
            x = getattr(self, f"side_block_{i + 1}")(x)
        return self.side_output(x)


class _SideBlock(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.block = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                   nn.Conv2d(in_ch, out_ch, 3, padding=1),
                                   nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.block(x)


class OutConv(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x):
        return self.conv(x)


# ----------------------------------------------------------------------------- networks

class UNet(nn.Module):
    """Encoder (1 -> 1/16 size) and four up blocks back to full size.

    ``forward_features`` returns the last decoder map (``f`` channels) and the outputs of the
    first three up blocks (for deep supervision). Input H and W must be multiples of 16.
    """

    def __init__(self, in_ch, base_width, up_block):
        super().__init__()
        f = base_width
        self.inc = DoubleConv(in_ch, f)
        self.down1, self.down2 = Down(f, 2 * f), Down(2 * f, 4 * f)
        self.down3, self.down4 = Down(4 * f, 8 * f), Down(8 * f, 16 * f)
        self.up1, self.up2 = up_block(16 * f, 8 * f), up_block(8 * f, 4 * f)
        self.up3, self.up4 = up_block(4 * f, 2 * f), up_block(2 * f, f)

    def forward_features(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        d1 = self.up1(x5, x4)
        d2 = self.up2(d1, x3)
        d3 = self.up3(d2, x2)
        return self.up4(d3, x1), (d1, d2, d3)


class BranchGenerator(UNet):
    """G_A / G_V: a dual-path U-Net. Returns (logits, last decoder features)."""

    def __init__(self, out_ch, base_width=32, in_ch=3):
        super().__init__(in_ch, base_width, DualPathUp)
        self.outc = OutConv(base_width, out_ch)

    def forward(self, x):
        features, _ = self.forward_features(x)
        return self.outc(features), features


class MainGenerator(UNet):
    """G: dual-path U-Net with three side outputs and a fusion head (DESIGN.md section 3).

    fusion="concat" (sigmoid variant): head reads [p_A, features, p_V] (f + 2*out_ch channels).
    fusion="mean" (softmax variant): head reads mean(features_A, features, features_V).
    fusion="none" (ablation): head reads G's own features only; no branch input.
    ``forward(x, branch_a, branch_v)`` returns (logits, [side1, side2, side3]); the branch
    inputs are the branches' probabilities (concat) or features (mean), already detached.
    ``with_sides=False`` skips the side heads (inference: 36 % of G's operations) and
    returns an empty list in their place.
    """

    FUSIONS = ("concat", "mean", "none")

    def __init__(self, out_ch, base_width=32, fusion="concat", in_ch=3):
        super().__init__(in_ch, base_width, DualPathUp)
        if fusion not in self.FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; expected one of {self.FUSIONS}")
        f = base_width
        self.fusion = fusion
        self.S1 = SideOutput(8 * f, out_ch, steps=3)
        self.S2 = SideOutput(4 * f, out_ch, steps=2)
        self.S3 = SideOutput(2 * f, out_ch, steps=1)
        self.outc = OutConv(f + 2 * out_ch if fusion == "concat" else f, out_ch)

    def forward(self, x, branch_a=None, branch_v=None, with_sides=True):
        features, (d1, d2, d3) = self.forward_features(x)
        if self.fusion == "concat":
            fused = torch.cat([branch_a, features, branch_v], dim=1)
        elif self.fusion == "mean":
            fused = (branch_a + features + branch_v) / 3
        else:
            fused = features
        sides = [self.S1(d1), self.S2(d2), self.S3(d3)] if with_sides else []
        return self.outc(fused), sides


class Discriminator(UNet):
    """D: plain U-Net on [image, label map]; a per-pixel real/fake logit map."""

    def __init__(self, label_ch, base_width=32, image_ch=3):
        super().__init__(image_ch + label_ch, base_width, PlainUp)
        self.outc = OutConv(base_width, label_ch)

    def forward(self, image, label_map):
        features, _ = self.forward_features(torch.cat([image, label_map], dim=1))
        return self.outc(features)


def count_parameters(module):
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def fold_batchnorm(module: nn.Module) -> nn.Module:
    """For inference only: fold each BatchNorm that directly follows a Conv2d in an
    nn.Sequential into that convolution, with its running statistics, and put nn.Identity in
    its place (in place; returns ``module``):

        w' = w * s,  b' = (b - mean) * s + beta,  s = gamma / sqrt(var + eps)

    The outputs are the same to float rounding; a forward does one pass over each map less
    (its gain is measured by benchmarks/folding.py; README, Performance). The BatchNorms of the
    channel-pair sums follow a sum, not a convolution, and stay. Afterwards the module cannot
    be trained, and its state dict no longer has the checkpoints' layout. Every pair is checked
    before any is folded, so an error leaves the module as it was."""
    pairs = [(seq, i) for seq in module.modules() if isinstance(seq, nn.Sequential)
             for i in range(len(seq) - 1)
             if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d)]
    for seq, i in pairs:
        conv, bn = seq[i], seq[i + 1]
        if bn.training or bn.running_var is None or bn.weight is None or conv.bias is None:
            raise ValueError("fold_batchnorm needs eval-mode BatchNorms with running statistics and affine "
                             "weights after convolutions with a bias")
    for seq, i in pairs:
        conv, bn = seq[i], seq[i + 1]
        scale = bn.weight.float() / torch.sqrt(bn.running_var.float() + bn.eps)
        conv.weight.copy_(conv.weight.float() * scale.view(-1, 1, 1, 1))  # in place: keeps format, device
        conv.bias.copy_((conv.bias.float() - bn.running_mean.float()) * scale + bn.bias.float())
        seq[i + 1] = nn.Identity()
    return module
