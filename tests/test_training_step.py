"""The losses and the training step of DESIGN.md sections 3 and 4."""
import copy

import pytest
import torch
import torch.nn.functional as F

from scripts.bfnet import (Networks, Trainer, adversarial_loss, make_targets, segmentation_loss,
                           to_picture)
from scripts.config import RunConfig
from scripts.device import amp_dtype_for


def batch(seed=0, size=(32, 32)):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (2, *size), generator=g)
    return torch.randn(2, 3, *size, generator=g), labels


def test_sigmoid_targets_are_artery_uncertain_vein_channels():
    labels = torch.tensor([[[0, 1, 2, 3]]])
    t = make_targets(labels, "sigmoid")
    assert t.main[0, :, 0].tolist() == [[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    assert t.artery[0, :, 0].tolist() == [[0, 1, 0, 0]] * 3  # binary artery map over 3 channels
    assert t.vein[0, :, 0].tolist() == [[0, 0, 1, 0]] * 3


def test_softmax_targets_are_four_class_one_hot_for_every_network():
    labels = torch.tensor([[[0, 1, 2, 3]]])
    t = make_targets(labels, "softmax")
    assert t.main[0, :, 0, :].tolist() == torch.eye(4).tolist()
    assert torch.equal(t.artery, t.main) and torch.equal(t.vein, t.main)


def test_segmentation_losses():
    cfg = RunConfig(alpha=0.5, beta=1.1)
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 4, (2, 4, 4))
    t = make_targets(labels, "sigmoid")
    expected = 1.1 * F.binary_cross_entropy_with_logits(logits, t.main) + 0.5 * ((logits.sigmoid() - t.main) ** 2).mean()
    assert torch.allclose(segmentation_loss(logits, t.main, t.label, cfg), expected)

    cfg = RunConfig(activation="softmax", alpha=0.5, beta=1.1)
    logits = torch.randn(2, 4, 4, 4)
    t = make_targets(labels, "softmax")
    expected = 1.1 * F.cross_entropy(logits, labels) + 0.5 * ((logits.softmax(1) - t.main) ** 2).mean()
    assert torch.allclose(segmentation_loss(logits, t.main, t.label, cfg), expected)


def test_adversarial_loss_is_bce_against_all_ones_or_zeros():
    d = torch.randn(2, 3, 4, 4)
    assert torch.allclose(adversarial_loss(d, True), F.softplus(-d).mean())
    assert torch.allclose(adversarial_loss(d, False), F.softplus(d).mean())


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_one_step_updates_each_network_as_specified(activation):
    torch.manual_seed(0)
    cfg = RunConfig(activation=activation, base_width=4, learning_rate=1e-3)
    nets = Networks(activation, 4)
    trainer = Trainer(nets, cfg)
    before = copy.deepcopy(nets.state_dict())
    losses = trainer.step(*batch())
    assert set(losses) == {"D_A", "D_V", "D_G", "G_A", "G_V", "G"}
    assert all(torch.isfinite(v) for v in losses.values())
    # D is stepped three times (steps 1-3), every generator once (steps 4-6).
    steps = {k: int(next(iter(o.state.values()))["step"]) for k, o in trainer.optimizers.items()}
    assert steps == {"D": 3, "G": 1, "G_A": 1, "G_V": 1}
    for name in ("G", "G_A", "G_V", "D"):
        key = f"{name}.inc.double_conv.0.weight"
        assert not torch.equal(before[key], nets.state_dict()[key]), name


def test_the_losses_of_one_step_are_the_specified_sums():
    """Recomputed by hand from copies of the networks (train mode: BatchNorm on batch statistics):
    steps 1-3, D's loss is BCE(D(image, the judged network's target), real) + BCE(D(image, its
    probabilities), fake), with the D of before that step; steps 4-6, each generator's loss is
    gamma * BCE(D(image, p), real) + beta * BCE + alpha * MSE, with the D updated three times,
    and G's adds its side outputs' segmentation losses weighted 1/2, 1/4, 1/8 (deepest first)."""
    torch.manual_seed(0)
    cfg = RunConfig(base_width=4, learning_rate=1e-3)
    assert (cfg.alpha, cfg.beta, cfg.gamma) == (0.5, 1.1, 0.08)  # DESIGN.md section 4
    nets = Networks("sigmoid", 4)
    before = copy.deepcopy(nets)
    images, labels = batch()
    losses = Trainer(nets, cfg).step(images, labels)

    t = make_targets(labels, "sigmoid")
    with torch.no_grad():
        out = before.generate(images)
        p = {k: out[k].sigmoid() for k in ("A", "V", "G")}

        def seg(logits, target):
            return 1.1 * F.binary_cross_entropy_with_logits(logits, target) + 0.5 * F.mse_loss(logits.sigmoid(), target)

        def bce(d_logits, real):
            return F.binary_cross_entropy_with_logits(d_logits, torch.full_like(d_logits, float(real)))

        d_a = bce(before.D(images, t.artery), True) + bce(before.D(images, p["A"]), False)
        assert torch.allclose(losses["D_A"], d_a, atol=1e-6)
        for key, target in (("A", t.artery), ("V", t.vein), ("G", t.main)):
            expected = 0.08 * bce(nets.D(images, p[key]), True) + seg(out[key], target)
            if key == "G":
                expected += sum(w * seg(side, t.main) for w, side in zip((0.5, 0.25, 0.125), out["sides"], strict=True))
            name = "G" if key == "G" else f"G_{key}"
            assert torch.allclose(losses[name], expected, atol=1e-6), name


def test_d_judges_each_target_as_real_and_each_networks_probabilities_as_fake_in_order():
    """What D sees, pass by pass: steps 1-3 (G_A, G_V, G) the network's target as real, then its
    probabilities as fake; steps 4-6 the probabilities of G_A, G_V and G (against real)."""
    torch.manual_seed(0)
    nets = Networks("sigmoid", 4)
    before = copy.deepcopy(nets)
    images, labels = batch()
    seen = []
    nets.D.register_forward_hook(lambda module, inputs, output: seen.append(inputs[1].detach().clone()))
    Trainer(nets, RunConfig(base_width=4)).step(images, labels)
    t = make_targets(labels, "sigmoid")
    with torch.no_grad():  # train mode, as in the step: BatchNorm on this batch's statistics
        out = before.generate(images)
    p = {k: out[k].sigmoid() for k in ("A", "V", "G")}
    expected = [t.artery, p["A"], t.vein, p["V"], t.main, p["G"], p["A"], p["V"], p["G"]]
    assert len(seen) == len(expected)
    for i, (got, want) in enumerate(zip(seen, expected, strict=True)):
        assert torch.allclose(got, want, atol=1e-6), f"D's pass {i + 1}"


def test_the_adversarial_term_trains_every_generator():
    """Steps 4-6: gamma * BCE(D(image, p), real) reaches each generator through its
    probabilities p: with the segmentation weights at 0 (alpha = beta = 0) each still moves."""
    torch.manual_seed(0)
    nets = Networks("sigmoid", 4)
    before = copy.deepcopy(nets.state_dict())
    Trainer(nets, RunConfig(base_width=4, alpha=0, beta=0, gamma=1)).step(*batch())
    for name in ("G", "G_A", "G_V"):
        key = f"{name}.inc.double_conv.0.weight"
        assert not torch.equal(before[key], nets.state_dict()[key]), name
    # ... and without it (gamma = 0 too) nothing drives them: the check above can fail.
    nets = Networks("sigmoid", 4)
    before = copy.deepcopy(nets.state_dict())
    Trainer(nets, RunConfig(base_width=4, alpha=0, beta=0, gamma=0)).step(*batch())
    assert torch.equal(before["G_A.inc.double_conv.0.weight"], nets.state_dict()["G_A.inc.double_conv.0.weight"])


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_g_head_reads_the_specified_fusion_of_the_branches(activation):
    """Section 3: the sigmoid variant's head reads [sigmoid(G_A logits), G's last features,
    sigmoid(G_V logits)]; the softmax variant's the mean of G_A's, G's and G_V's features."""
    torch.manual_seed(0)
    nets = Networks(activation, 4).eval()
    images = batch()[0]
    head_input = []
    nets.G.outc.register_forward_hook(lambda module, inputs, output: head_input.append(inputs[0]))
    with torch.no_grad():
        nets.generate(images)
        logits_a, features_a = nets.G_A(images)
        logits_v, features_v = nets.G_V(images)
        features, _ = nets.G.forward_features(images)
    if activation == "sigmoid":
        expected = torch.cat([logits_a.sigmoid(), features, logits_v.sigmoid()], 1)
    else:
        expected = (features_a + features + features_v) / 3
    assert torch.allclose(head_input[0], expected, atol=1e-6)


def test_the_python_defaults_are_the_specified_ones():
    """Section 4: the Python defaults were batch 6, lr 2e-4, 240 epochs, 5 % validation (train.sh
    gives the published schedule); section 5: rotation by multiples of 3 degrees (the paper's)."""
    cfg = RunConfig()
    assert (cfg.batch_size, cfg.learning_rate, cfg.epochs, cfg.validation) == (6, 2e-4, 240, 5.0)
    assert (cfg.activation, cfg.base_width, cfg.rotation_step) == ("sigmoid", 32, 3)


def test_optimisers_and_plateau_schedules_are_the_specified_ones():
    cfg = RunConfig(base_width=4, learning_rate=8e-4)
    trainer = Trainer(Networks("sigmoid", 4), cfg)
    for optimizer in trainer.optimizers.values():
        assert isinstance(optimizer, torch.optim.Adam)
        assert optimizer.param_groups[0]["betas"] == (0.5, 0.999) and optimizer.param_groups[0]["lr"] == 8e-4
    assert set(trainer.schedulers) == {"G", "D"}
    for scheduler in trainer.schedulers.values():
        assert (scheduler.mode, scheduler.factor, scheduler.patience) == ("min", 0.5, 50)


def test_main_generator_loss_does_not_reach_the_branches():
    torch.manual_seed(0)
    nets = Networks("sigmoid", 4)
    images, labels = batch()
    out = nets.generate(images)
    out["G"].sum().backward()
    assert all(p.grad is None for p in nets.G_A.parameters())
    assert all(p.grad is None for p in nets.G_V.parameters())
    assert nets.G.outc.conv.weight.grad is not None


def test_fusion_none_trains_the_main_generator_alone():
    cfg = RunConfig(base_width=4, fusion="none")
    nets = Networks("sigmoid", 4, "none")
    trainer = Trainer(nets, cfg)
    losses = trainer.step(*batch())
    assert set(losses) == {"D_G", "G"} and set(trainer.optimizers) == {"D", "G"}


def test_softmax_picture_is_the_colour_of_the_argmax():
    probs = torch.zeros(1, 4, 1, 4)
    probs[0, [0, 1, 2, 3], 0, [0, 1, 2, 3]] = 1
    pic = to_picture(probs, "softmax")[0, :, 0].T.tolist()
    assert pic == [[0, 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]]  # bg, artery red, vein blue, uncertain green


# CPU always; CUDA as well where there is one (on a lent GPU: `pytest tests/test_training_step.py`).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_mixed_precision_losses_follow_fp32_over_the_first_steps(activation, device):
    """The tuned path (mixed precision as train.py picks it, channels_last; fused Adam on CUDA)
    against plain fp32, same start and data."""
    tuned_dtype = amp_dtype_for(torch.device(device), True) or torch.bfloat16
    results = {}
    for tuned in (False, True):
        torch.manual_seed(0)
        fmt = torch.channels_last if tuned else torch.contiguous_format
        nets = Networks(activation, 4).to(device, memory_format=fmt)
        trainer = Trainer(nets, RunConfig(activation=activation, base_width=4), tuned_dtype if tuned else None,
                          fused=tuned and device == "cuda")
        images, labels = (t.to(device) for t in batch(size=(64, 64)))
        results[tuned] = [trainer.step(images.contiguous(memory_format=fmt), labels) for _ in range(3)]
    for plain, tuned in zip(results[False], results[True], strict=True):
        for key in plain:
            assert torch.isclose(plain[key], tuned[key], rtol=0.05), (key, plain[key], tuned[key])


@pytest.mark.parametrize("amp_discriminator", [True, False])
def test_no_amp_discriminator_keeps_d_in_fp32_and_the_generators_mixed(amp_discriminator):
    """--no-amp-discriminator: D's passes run in fp32, the generators' under autocast."""
    torch.manual_seed(0)
    nets = Networks("sigmoid", 4)
    cfg = RunConfig(base_width=4, amp_discriminator=amp_discriminator)
    seen = {"D": set(), "G": set()}
    nets.D.outc.register_forward_hook(lambda m, i, o: seen["D"].add(o.dtype))
    nets.G.outc.register_forward_hook(lambda m, i, o: seen["G"].add(o.dtype))
    losses = Trainer(nets, cfg, torch.bfloat16).step(*batch(size=(64, 64)))
    assert seen["G"] == {torch.bfloat16}
    assert seen["D"] == ({torch.bfloat16} if amp_discriminator else {torch.float32})
    assert all(torch.isfinite(v) for v in losses.values())


def test_a_resumed_trainer_keeps_its_own_adam_implementation():
    """A saved optimizer state carries the saving run's 'fused' flag; loading it must not turn
    fused Adam off (a CPU run resumed on a GPU) or on (a GPU run resumed on a CPU)."""
    torch.manual_seed(0)
    cfg = RunConfig(base_width=4)
    images, labels = batch()
    plain = Trainer(Networks("sigmoid", 4), cfg)
    plain.step(images, labels)
    fused = Trainer(Networks("sigmoid", 4), cfg, fused=True)
    fused.load_state_dict(plain.state_dict())
    assert all(g["fused"] for o in fused.optimizers.values() for g in o.param_groups)
    plain.load_state_dict(fused.state_dict())
    assert not any(g["fused"] for o in plain.optimizers.values() for g in o.param_groups)
