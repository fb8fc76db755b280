"""The epoch loop of DESIGN.md section 4: validation once per epoch; the networks kept are those
of the epoch with the best validation F1, the weighted average; ReduceLROnPlateau on G and D
stepped once per epoch with the last losses."""
import pytest
import torch

import train
from scripts.checkpoint import NETWORK_FILES
from scripts.config import RunConfig


def test_the_best_average_f1_is_kept_and_the_schedules_step_with_each_epochs_last_losses(real_data, tmp_path,
                                                                                          monkeypatch):
    """Validation F1s of 0.2, 0.5, 0.3 (the per-class ones peaking elsewhere): epoch 2's networks
    are kept. Each epoch's last training losses step the schedules, once per epoch."""
    average_f1s = iter([0.2, 0.5, 0.3])
    real_validate, real_step, real_plateau_step = train.validate, train.Trainer.step, train.Trainer.plateau_step
    step_losses, plateau_losses = [], []

    def validate(*args, **kwargs):
        summary, drawing = real_validate(*args, **kwargs)
        summary["average"]["f1"] = next(average_f1s)
        for group in ("artery", "vein", "uncertain"):
            summary[group]["f1"] = 1 - summary["average"]["f1"]
        return summary, drawing

    def step(self, *args, **kwargs):
        losses = real_step(self, *args, **kwargs)
        step_losses.append({k: float(v) for k, v in losses.items()})
        return losses

    def plateau_step(self, losses):
        plateau_losses.append({k: float(v) for k, v in losses.items()})
        real_plateau_step(self, losses)

    monkeypatch.setattr(train, "validate", validate)
    monkeypatch.setattr(train.Trainer, "step", step)
    monkeypatch.setattr(train.Trainer, "plateau_step", plateau_step)
    cfg = RunConfig(dataset="DRIVE_AV", data_root=str(real_data), job_name="loop", epochs=3, batch_size=4,
                    image_size=(64, 64), base_width=4, validation=10, seed=3, cache_dir=str(tmp_path / "cache"),
                    device="cpu", image_every=0)
    best_f1, complete = train.train(cfg, tmp_path / "runs", tmp_path)
    assert complete and best_f1 == pytest.approx(0.5)

    run_dir = tmp_path / "DRIVE_AV" / "loop"
    for filename in NETWORK_FILES.values():
        kept = torch.load(run_dir / filename, weights_only=True)
        assert (kept["epoch"], kept["val_f1"]) == (2, pytest.approx(0.5)), filename

    per_epoch = len(step_losses) // 3
    assert per_epoch * 3 == len(step_losses)
    assert plateau_losses == [step_losses[(epoch + 1) * per_epoch - 1] for epoch in range(3)]
    schedulers = torch.load(run_dir / "last.pth", weights_only=True)["trainer"]["schedulers"]
    assert schedulers["G"]["last_epoch"] == 3 and schedulers["D"]["last_epoch"] == 3
    assert schedulers["G"]["best"] == pytest.approx(min(losses["G"] for losses in plateau_losses))
    assert schedulers["D"]["best"] == pytest.approx(
        min(losses["D_A"] + losses["D_V"] + losses["D_G"] for losses in plateau_losses))
