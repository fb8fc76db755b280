"""BF-Net: the two variants (DESIGN.md section 3) and the adversarial training step (section 4)."""
import contextlib
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import VARIANTS, ConfigError, RunConfig, fusion_or_default
from .metrics import CLASS_COLOURS
from .model import BranchGenerator, Discriminator, MainGenerator, fold_batchnorm

SIDE_WEIGHTS = (0.5, 0.25, 0.125)  # S1 (deepest), S2, S3


def out_channels(activation: str) -> int:
    if activation not in VARIANTS:
        raise ConfigError(f"unknown activation {activation!r}; expected one of {tuple(VARIANTS)}")
    return len(VARIANTS[activation].channels)


def probabilities(logits, activation):
    return logits.sigmoid() if activation == "sigmoid" else logits.softmax(1)


def to_picture(probs, activation):
    """Network probabilities -> the RGB picture of DESIGN.md section 7 (R artery, G uncertain,
    B vein), floats in [0, 1]. sigmoid: its channels are already (artery, uncertain, vein);
    softmax: the colour of the argmax class."""
    if activation == "sigmoid":
        return probs
    colour = probs.new_tensor(CLASS_COLOURS) / 255
    return colour[probs.argmax(1)].permute(0, 3, 1, 2)


@dataclass
class Targets:
    main: torch.Tensor      # target of G (float maps, B x C x H x W)
    artery: torch.Tensor    # target of G_A
    vein: torch.Tensor      # target of G_V
    label: torch.Tensor     # B x H x W class indices (for cross-entropy)


def make_targets(labels, activation) -> Targets:
    """sigmoid: channels (artery, uncertain, vein) = one-hot of labels 1, 3, 2; branch targets
    are the binary artery (label 1) and vein (label 2) maps repeated over 3 channels.
    softmax: one-hot of the 4 classes, for G and both branches."""
    if activation == "sigmoid":
        main = torch.stack([labels == 1, labels == 3, labels == 2], 1).float()
        artery = (labels == 1).unsqueeze(1).float().expand(-1, 3, -1, -1)
        vein = (labels == 2).unsqueeze(1).float().expand(-1, 3, -1, -1)
        return Targets(main, artery, vein, labels)
    onehot = F.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    return Targets(onehot, onehot, onehot, labels)


class Networks(nn.Module):
    """G, G_A, G_V and D of one variant; ``fusion='none'`` is the ablation without branches."""

    def __init__(self, activation="sigmoid", base_width=32, fusion=None):
        super().__init__()
        c = out_channels(activation)
        self.activation = activation
        self.base_width = base_width
        self.fusion = fusion_or_default(activation, fusion)
        self.G = MainGenerator(c, base_width, self.fusion)
        self.G_A = BranchGenerator(c, base_width)
        self.G_V = BranchGenerator(c, base_width)
        self.D = Discriminator(c, base_width)
        self.folded = False  # fold_for_inference: BatchNorm folded, never saved
        self.compiled_for_inference = False  # evaluate.compile_for_inference: predict is compiled

    @property
    def uses_branches(self):
        return self.fusion != "none"

    @property
    def generator_names(self):
        """The generators that are trained, saved and predict: G, G_A, G_V; G alone for fusion 'none'."""
        return ("G", "G_A", "G_V") if self.uses_branches else ("G",)

    def generate(self, images, modules=None, with_sides=True):
        """Forward of the generators: dict of logits (and G's side outputs, unless
        ``with_sides=False``).

        Branch outputs enter G detached: G's loss never trains the branches. ``modules``
        optionally maps 'G', 'G_A', 'G_V' to wrappers of them (DistributedDataParallel)."""
        m = modules or {"G": self.G, "G_A": self.G_A, "G_V": self.G_V}
        out = {}
        branch_a = branch_v = None
        if self.uses_branches:
            out["A"], feat_a = m["G_A"](images)
            out["V"], feat_v = m["G_V"](images)
            if self.fusion == "concat":
                branch_a = probabilities(out["A"], self.activation).detach()
                branch_v = probabilities(out["V"], self.activation).detach()
            else:
                branch_a, branch_v = feat_a.detach(), feat_v.detach()
        out["G"], out["sides"] = m["G"](images, branch_a, branch_v, with_sides=with_sides)
        return out

    def fold_for_inference(self):
        """Eval mode, with BatchNorm folded into the convolutions of the generators
        (``fold_batchnorm``): the same predictions to float rounding, faster. For test.py and
        predict.py, after loading: the networks can then only predict (no training, no saving)."""
        self.eval()
        for name in self.generator_names:
            fold_batchnorm(getattr(self, name))
        self.folded = True
        return self

    def check_not_folded(self):
        """Saving (checkpoints, last.pth, bundles) refuses networks folded for inference: their
        state dicts no longer have the layout any loader expects."""
        if self.folded:
            raise ValueError("these networks were folded for inference (fold_for_inference) and cannot be saved")

    @torch.no_grad()
    def predict(self, images):
        """Probabilities of G's final output (the side heads, for training only, are skipped)."""
        return probabilities(self.generate(images, with_sides=False)["G"], self.activation)


def segmentation_loss(logits, target_map, label, cfg: RunConfig):
    """beta * (BCE-with-logits | cross-entropy) + alpha * MSE(probabilities, target_map).

    ``target_map``: this network's target (Targets.main, .artery or .vein); ``label``: the
    class-index map, which cross-entropy (softmax variant) reads instead."""
    if cfg.activation == "sigmoid":
        seg = F.binary_cross_entropy_with_logits(logits, target_map)
    else:
        seg = F.cross_entropy(logits, label)
    mse = F.mse_loss(probabilities(logits, cfg.activation), target_map)
    return cfg.beta * seg + cfg.alpha * mse


def adversarial_loss(d_logits, real: bool):
    return F.binary_cross_entropy_with_logits(d_logits, torch.full_like(d_logits, float(real)))


class Trainer:
    """The training step of DESIGN.md section 4 with an Adam(lr, (0.5, 0.999)) per network.

    ``amp_dtype`` runs the forward passes under autocast (CUDA, or bf16 on a CPU); fp16 adds
    grad scalers. ``cfg.amp_discriminator`` False keeps D's passes in fp32 (an experiment: in
    one reduced bf16 run on a CPU, D won its game for a long stretch; README, Performance).
    ``ddp``: wrap the networks in DistributedDataParallel (see scripts/distributed.py).
    """

    def __init__(self, nets: Networks, cfg: RunConfig, amp_dtype: Optional[torch.dtype] = None,
                 fused: bool = False, ddp: bool = False, device_ids=None):
        # fused=None, not False, off CUDA: torch then picks its fastest Adam for the device (foreach).
        self.nets, self.cfg, self.amp_dtype, self.fused = nets, cfg, amp_dtype, fused or None
        names = ("D", *nets.generator_names)
        self.optimizers = {n: torch.optim.Adam(getattr(nets, n).parameters(), lr=cfg.learning_rate,
                                               betas=(0.5, 0.999), fused=self.fused)
                           for n in names}
        self.schedulers = {n: torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizers[n], mode="min", factor=0.5, patience=50) for n in ("G", "D")}
        use_scaler = amp_dtype == torch.float16
        self.scalers = {n: torch.amp.GradScaler("cuda", enabled=use_scaler) for n in names}
        self.modules = {n: getattr(nets, n) for n in names}
        if ddp:
            from torch.nn.parallel import DistributedDataParallel
            self.modules = {n: DistributedDataParallel(m, device_ids=device_ids)
                            for n, m in self.modules.items()}

    def _autocast(self, device_type, network="G"):
        if self.amp_dtype is None or (network == "D" and not self.cfg.amp_discriminator):
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.amp_dtype)

    def _backward(self, name, loss, weight):
        self.scalers[name].scale(loss * weight).backward()

    def _update(self, name):
        self.scalers[name].step(self.optimizers[name])
        self.scalers[name].update()
        self.optimizers[name].zero_grad(set_to_none=True)

    def step(self, images, labels, weight=1.0):
        """One batch. images: normalised Bx3xHxW; labels: BxHxW long. ``weight`` scales the
        gradients (this rank's share of a distributed batch times the world size). Returns
        the loss tensors (detached, on the device: reading them is the caller's sync point)."""
        nets, cfg, dev = self.nets, self.cfg, images.device.type
        # All generator forwards run once, first (G reads the branches' detached outputs of
        # this same forward); then steps 1-3 update D once per judged network, in the order
        # G_A, G_V, G, and steps 4-6 update G_A, G_V and G. Loss keys: D_A, D_V, D_G for
        # the D steps and G_A, G_V, G for the generator steps.
        targets = make_targets(labels, cfg.activation)
        judged = [("G", targets.main)]
        if nets.uses_branches:
            judged = [("A", targets.artery), ("V", targets.vein)] + judged
        with self._autocast(dev):
            out = nets.generate(images, self.modules)
        probs = {k: probabilities(out[k].float(), cfg.activation) for k, _ in judged}

        # Steps 1-3: D learns each network's target as real, its probabilities as fake.
        # Real and fake pass through D separately (its BatchNorm sees one kind at a time).
        losses = {}
        for key, target in judged:
            loss_d = 0
            for label_map, real in ((target, True), (probs[key].detach(), False)):
                with self._autocast(dev, "D"):
                    d_logits = self.modules["D"](images, label_map)
                loss = adversarial_loss(d_logits.float(), real)
                self._backward("D", loss, weight)
                loss_d = loss_d + loss.detach()
            self._update("D")
            losses[f"D_{key}"] = loss_d

        # Steps 4-6: each generator fools the updated D and fits its target. D's weights get
        # no gradient here (they are not stepped), which saves a third of the backward work.
        nets.D.requires_grad_(False)
        for key, target in judged:
            with self._autocast(dev, "D"):
                d_fake = nets.D(images, probs[key])
            loss = cfg.gamma * adversarial_loss(d_fake.float(), True) + \
                segmentation_loss(out[key].float(), target, targets.label, cfg)
            if key == "G":
                for side_weight, side in zip(SIDE_WEIGHTS, out["sides"], strict=True):
                    loss = loss + side_weight * segmentation_loss(side.float(), target, targets.label, cfg)
            name = "G" if key == "G" else f"G_{key}"
            self._backward(name, loss, weight)
            self._update(name)
            losses[name] = loss.detach()
        nets.D.requires_grad_(True)
        return losses

    def plateau_step(self, losses):
        """ReduceLROnPlateau on G and D with the last losses (once per epoch)."""
        self.schedulers["G"].step(float(losses["G"]))
        self.schedulers["D"].step(float(sum(v for k, v in losses.items() if k.startswith("D_"))))

    def state_dict(self):
        return {"optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "scalers": {k: s.state_dict() for k, s in self.scalers.items()}}

    def load_state_dict(self, state):
        for group in ("optimizers", "schedulers", "scalers"):
            for k, obj in getattr(self, group).items():
                if group == "scalers" and not state[group][k]:
                    continue  # saved without fp16 scaling (CPU, bf16, --no-amp): start fresh
                obj.load_state_dict(state[group][k])
        for opt in self.optimizers.values():  # a saved state also brings its 'fused': keep this run's
            for g in opt.param_groups:         # (a CPU run resumed on a GPU keeps fused Adam, and back)
                g["fused"] = self.fused
