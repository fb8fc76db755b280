"""Weights bundles (scripts/bundle.py) and load_any: round trips (one file, fp16, shards), the
original authors' plain state dicts (golden outputs through load_any), and clear errors."""
import json
import re

import numpy as np
import pytest
import torch

from scripts import bundle
from scripts.bfnet import Networks
from scripts.bundle import export_bundle, load_any, load_bundle
from scripts.checkpoint import CheckpointError, save_best
from scripts.config import RunConfig
from tests.test_model import CHECKPOINTS, OFFSET, golden_state_dict, read_listing

pytestmark = pytest.mark.usefixtures("one_thread")


X = torch.linspace(-2, 2, 3 * 48 * 64).reshape(1, 3, 48, 64)


def randomised(activation="sigmoid", width=4, seed=0):
    """Networks with random weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    nets = Networks(activation, width)
    with torch.no_grad():
        for m in nets.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.8, 1.2)
                m.bias.uniform_(-0.1, 0.1)
    return nets.eval()


def outputs(nets):
    with torch.no_grad():
        out = nets.generate(X)
    return {"A": out["A"], "V": out["V"], "G": out["G"], **{f"S{i}": s for i, s in enumerate(out["sides"])}}


def all_tensor_names(nets):
    return {f"{n}.{k}" for n in ("G", "G_A", "G_V") for k in getattr(nets, n).state_dict()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "sigmoid_seed42"
    nets = randomised()
    save_best(folder, nets, RunConfig(base_width=4, image_size=(64, 48)), epoch=3, val_f1=0.5)
    return folder, nets


def test_single_file_round_trip_is_exact(run, tmp_path):
    folder, nets = run
    path = export_bundle(folder, tmp_path / "bfnet.pth")
    assert path == tmp_path / "bfnet.pth" and not list(tmp_path.glob(".*"))  # no temporary left
    loaded, cfg = load_bundle(path)
    assert not loaded.training and cfg["image_size"] == [64, 48] and cfg["base_width"] == 4
    ref, got = outputs(nets), outputs(loaded)
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    data = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert data["format"] == "avseg-bundle" and data["dtype"] == "float32"
    assert set(data["networks"]) == {"G", "G_A", "G_V"}


def test_fp16_bundle_is_half_the_size_and_close(run, tmp_path):
    folder, nets = run
    full = export_bundle(folder, tmp_path / "full.pth")
    half = export_bundle(folder, tmp_path / "half.pth", fp16=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    data = torch.load(half, weights_only=True)
    assert data["networks"]["G"]["inc.double_conv.0.weight"].dtype == torch.float16
    loaded, _ = load_bundle(half)
    assert loaded.G.inc.double_conv[0].weight.dtype == torch.float32  # cast back
    ref, got = outputs(nets), outputs(loaded)
    for k in ref:
        err = (ref[k] - got[k]).abs().max() / ref[k].abs().max()
        assert err < 5e-3, f"{k}: relative error {err:.1e}"


def test_re_export_keeps_the_precision_of_its_source(run, tmp_path, capsys):
    """An fp16 bundle exported again (re-sharded, say) stays fp16 unless told otherwise:
    fp32 copies of fp16-rounded weights would double the size and gain nothing."""
    folder, _ = run
    half = export_bundle(folder, tmp_path / "half.pth", fp16=True)
    assert load_any(half)[1]["stored_dtype"] == "float16"
    again = export_bundle(half, tmp_path / "again.pth", shard_mib=1)
    assert json.loads(again.read_text())["dtype"] == "float16"
    assert load_any(again)[1]["stored_dtype"] == "float16"
    full = export_bundle(half, tmp_path / "full.pth", fp16=False)
    assert torch.load(full, weights_only=True)["dtype"] == "float32"
    assert "stored_dtype" not in torch.load(full, weights_only=True)["config"]  # not a config value
    assert torch.load(export_bundle(folder, tmp_path / "run.pth"), weights_only=True)["dtype"] == "float32"
    bundle.main(["info", str(again)])
    out = capsys.readouterr().out
    best = torch.load(folder / "CP_best_F1_all.pth", weights_only=True)  # the epoch is the run's, kept in bundles
    assert (f"trained on DRIVE_AV, best validation F1 {100 * best['val_f1']:.2f} % at epoch {best['epoch']}, "
            f"stored as float16") in out


def test_sharded_bundle(run, tmp_path):
    folder, nets = run
    limit_mib = 0.25
    index_path = export_bundle(folder, tmp_path / "bfnet.pth", shard_mib=limit_mib)
    assert index_path == tmp_path / "bfnet.index.json"
    index = json.loads(index_path.read_text())
    shards = sorted(p.name for p in tmp_path.glob("bfnet-*.pth"))
    n = len(shards)
    assert n >= 3
    assert shards == [f"bfnet-{i:05d}-of-{n:05d}.pth" for i in range(1, n + 1)]
    for name in shards:
        assert (tmp_path / name).stat().st_size <= limit_mib * 2**20, name
    assert set(index["weight_map"]) == all_tensor_names(nets)       # every tensor, by full name
    assert set(index["weight_map"].values()) == set(shards)
    assert index["config"]["image_size"] == [64, 48]
    for source in (index_path, tmp_path):  # the index, or the folder holding it
        loaded, cfg = load_any(source)
        ref, got = outputs(nets), outputs(loaded)
        for k in ref:
            assert torch.equal(ref[k], got[k]), k
    # A later export with fewer shards leaves no stale shard behind.
    export_bundle(folder, tmp_path / "bfnet.pth", shard_mib=1)
    left = sorted(p.name for p in tmp_path.glob("bfnet-*.pth"))
    assert len(left) < n and all(re.fullmatch(rf"bfnet-\d{{5}}-of-{len(left):05d}\.pth", p) for p in left)


def test_sharded_fp16_and_cli(run, tmp_path, capsys):
    folder, nets = run
    bundle.main(["export", str(folder), str(tmp_path / "m.pth"), "--fp16", "--shard-mib", "0.2"])
    assert "wrote" in capsys.readouterr().out
    for p in tmp_path.glob("m-*.pth"):
        assert p.stat().st_size <= 0.2 * 2**20
    loaded, _ = load_any(tmp_path / "m.index.json")
    err = (outputs(nets)["G"] - outputs(loaded)["G"]).abs().max()
    assert err < 5e-3 * outputs(nets)["G"].abs().max()
    bundle.main(["info", str(tmp_path / "m.index.json")])
    assert "sigmoid variant, base width 4" in capsys.readouterr().out
    shard = next(tmp_path.glob("m-00001-of-*.pth"))  # one piece given for the whole: the index named
    with pytest.raises(CheckpointError, match=f"one shard of a sharded bundle; give its index, {tmp_path / 'm.index.json'}$"):
        load_any(shard)


def test_export_to_a_folder_or_below_a_file_is_one_line(run, tmp_path, capsys):
    folder, _ = run
    a_file = tmp_path / "taken.png"
    a_file.write_text("x")
    for out, line in ((tmp_path, f"error: {tmp_path} is a folder; name the bundle file (e.g. {tmp_path / 'bfnet.pth'})"),
                      (a_file / "m.pth", f"error: the bundle's folder {a_file}: a file of that name exists; "
                                         f"give a folder")):
        with pytest.raises(SystemExit) as info:
            bundle.main(["export", str(folder), str(out)])
        assert info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines() == [line]


def test_an_export_never_replaces_a_bundle_unless_told(run, tmp_path, capsys):
    """A lab's bundle (another model, its own --about) at OUT is refused in one line, untouched;
    --overwrite replaces it. A sharded bundle is known by its index."""
    folder, _ = run
    for out, args in ((tmp_path / "lab.pth", []), (tmp_path / "lab_sharded.pth", ["--shard-mib", "0.4"])):
        bundle.main(["export", str(folder), str(out), "--about", "the lab's", *args])
        written = out if not args else tmp_path / "lab_sharded.index.json"
        before = written.read_bytes()
        with pytest.raises(SystemExit) as info:
            bundle.main(["export", str(folder), str(out), "--about", "another", *args])
        assert info.value.code == 2 and capsys.readouterr().err.strip().splitlines() == [
            f"error: {written} exists: --overwrite replaces it, or name another OUT"]
        assert written.read_bytes() == before
        bundle.main(["export", str(folder), str(out), "--about", "another", "--overwrite", *args])
        assert load_any(written)[1]["about"] == "another"


def test_missing_shard_and_oversized_tensor(run, tmp_path):
    folder, _ = run
    index_path = export_bundle(folder, tmp_path / "b.pth", shard_mib=0.25)
    with pytest.raises(CheckpointError, match=r"does not fit in the 0.0\d\d MiB that --shard-mib leaves for tensors"):
        export_bundle(folder, tmp_path / "c.pth", shard_mib=0.1)
    next(tmp_path.glob("b-00002-*.pth")).unlink()
    with pytest.raises(CheckpointError, match="shard .* is missing"):
        load_any(index_path)


def test_export_from_networks_object(tmp_path):
    nets = randomised("softmax", 4, seed=3)
    path = export_bundle(nets, tmp_path / "s.pth", config={"activation": "softmax", "base_width": 4,
                                                           "fusion": "mean", "image_size": [32, 32]})
    loaded, cfg = load_any(path)
    assert cfg["activation"] == "softmax" and loaded.fusion == "mean"
    assert torch.equal(outputs(nets)["G"], outputs(loaded)["G"])


@pytest.mark.parametrize("variant", ["sigmoid", "softmax"])
def test_original_checkpoints_through_load_any_match_the_golden_outputs(variant, tmp_path):
    """The original's files: one plain state dict per network, made by the weight rule of
    original_checkpoints/README.md, loaded by name through load_any (D is not saved)."""
    listing, golden = read_listing(variant), np.load(CHECKPOINTS / f"golden_{variant}.npz")
    for key, filename in (("G", "CP_best_F1_all.pth"), ("G_A", "CP_best_F1_A.pth"), ("G_V", "CP_best_F1_V.pth")):
        torch.save(golden_state_dict(listing[key], OFFSET[key]), tmp_path / filename)
    nets, cfg = load_any(tmp_path, expected={"activation": variant, "base_width": 32})
    assert (cfg["activation"], cfg["base_width"]) == (variant, 32) and not nets.training
    with torch.no_grad():
        out = nets.generate(torch.from_numpy(golden["input"]))
    got = {"G_A_logits": out["A"], "G_V_logits": out["V"], "G_logits": out["G"],
           "G_side1": out["sides"][0], "G_side2": out["sides"][1], "G_side3": out["sides"][2]}
    for name, value in got.items():
        ref = golden[name]
        err = np.abs(value.numpy() - ref).max() / (np.abs(ref).max() + 1e-12)
        assert err < 1e-4, f"{name}: relative error {err:.2e}"
    # The same files, wrong variant asked for: one line naming both.
    other = "softmax" if variant == "sigmoid" else "sigmoid"
    with pytest.raises(CheckpointError) as info:
        load_any(tmp_path, expected={"activation": other})
    message = str(info.value)
    assert "\n" not in message and variant in message and f"activation={other}" in message


def test_state_dicts_saved_from_a_dataparallel_wrapper_load(tmp_path):
    """Plain state dicts whose keys carry DataParallel's 'module.' prefix load as the same networks."""
    nets = randomised(seed=5)
    for net, name in (("G", "CP_best_F1_all.pth"), ("G_A", "CP_best_F1_A.pth"), ("G_V", "CP_best_F1_V.pth")):
        torch.save({f"module.{k}": v for k, v in getattr(nets, net).state_dict().items()}, tmp_path / name)
    loaded, cfg = load_any(tmp_path)
    assert cfg == {"activation": "sigmoid", "base_width": 4, "fusion": "concat"}
    assert torch.equal(outputs(loaded)["G"], outputs(nets)["G"])


def test_original_2021_epoch_names_pick_the_highest_epoch(tmp_path, capsys):
    """CP_epoch<N>_{all,A,V}.pth: the highest N (numerically: 12 beats 9), and a note says which
    (the 2021 test.sh chose with --checkstart) and how to load another."""
    for epoch, seed in ((9, 1), (12, 2), (3, 3)):
        nets = randomised(seed=seed)
        for net, suffix in (("G", "all"), ("G_A", "A"), ("G_V", "V")):
            torch.save(getattr(nets, net).state_dict(), tmp_path / f"CP_epoch{epoch}_{suffix}.pth")
    loaded, cfg = load_any(tmp_path)
    assert cfg == {"activation": "sigmoid", "base_width": 4, "fusion": "concat"}
    assert torch.equal(outputs(loaded)["G"], outputs(randomised(seed=2))["G"])
    note = capsys.readouterr().err
    assert "3 epochs (3, 9, 12); loading epoch 12, the highest" in note and "CP_epoch3_all.pth" in note
    # Naming one file of an epoch loads that epoch, without the note.
    loaded9, _ = load_any(tmp_path / "CP_epoch9_A.pth")
    assert "note" not in capsys.readouterr().err
    assert torch.equal(outputs(loaded9)["G"], outputs(randomised(seed=1))["G"])


def test_wrong_variant_or_width_is_one_line(run, tmp_path):
    folder, _ = run
    path = export_bundle(folder, tmp_path / "b.pth")
    for source in (folder, path):
        with pytest.raises(CheckpointError) as info:
            load_any(source, expected={"activation": "softmax"})
        msg = str(info.value)
        assert "\n" not in msg and "sigmoid variant" in msg and "activation=softmax" in msg
    with pytest.raises(CheckpointError, match=r"base width 4.*base_width=8"):
        load_any(path, expected={"base_width": 8})
    # An original folder where one file is of the other variant.
    sig, soft = randomised("sigmoid", 4), randomised("softmax", 4)
    torch.save(sig.G.state_dict(), tmp_path / "CP_best_F1_all.pth")
    torch.save(soft.G_A.state_dict(), tmp_path / "CP_best_F1_A.pth")
    torch.save(sig.G_V.state_dict(), tmp_path / "CP_best_F1_V.pth")
    with pytest.raises(CheckpointError) as info:
        load_any(tmp_path)
    assert "\n" not in str(info.value) and "CP_best_F1_A.pth" in str(info.value)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "x.pth").write_bytes(b"<html>404 Not Found</html>")  # a web page saved under its name
    (tmp_path / "y.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"x.pth: not a PyTorch checkpoint \(torch.save's .pth, a bundle shard"):
        load_any(tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="not a bundle index"):
        load_any(tmp_path / "y.index.json")
    with pytest.raises(CheckpointError, match="no such file or folder"):
        load_any(tmp_path / "nothing")


def test_files_that_read_but_hold_something_else_are_one_line(run, tmp_path):
    """Readable .pth and index files of another model, or damaged ones, name the file and what is
    wrong instead of a traceback; an original softmax folder without its branch files is refused
    (G's head alone cannot tell mean fusion from the ablation, so it would load as the wrong model)."""
    folder, _ = run
    cases = {}
    for name, contents in (("other_model", {"fc.weight": torch.zeros(2, 2)}), ("tensor", torch.zeros(3)),
                           ("ours_without_config", {"format": "avseg-checkpoint", "state_dict": {}})):
        (tmp_path / name).mkdir()
        torch.save(contents, tmp_path / name / "CP_best_F1_all.pth")
        cases[tmp_path / name] = None
    (tmp_path / "softmax_G_only").mkdir()
    torch.save(randomised("softmax", 4).G.state_dict(), tmp_path / "softmax_G_only" / "CP_best_F1_all.pth")
    torch.save({"format": "avseg-bundle", "config": {"activation": "sigmoid", "base_width": 4}}, tmp_path / "b.pth")
    torch.save({"format": "avseg-bundle", "config": {"activation": "sigmoid"}, "networks": {}}, tmp_path / "c.pth")
    (tmp_path / "i.index.json").write_text('{"format": "avseg-bundle-index", "config": {}}')
    expected = {tmp_path / "other_model": "G's file is not a BF-Net generator",
                tmp_path / "tensor": "not a network's weights",
                tmp_path / "ours_without_config": "without its config",
                tmp_path / "softmax_G_only": "come as three files (G, G_A, G_V); found only G",
                tmp_path / "b.pth": "a bundle without its networks' weights",
                tmp_path / "c.pth": "its config does not name a BF-Net",
                tmp_path / "i.index.json": "its weight_map (network.tensor name -> shard file) is missing"}
    for path, words in expected.items():
        with pytest.raises(CheckpointError) as info:
            load_any(path)
        assert str(path) in str(info.value) and words in str(info.value) and "\n" not in str(info.value), path


def test_a_truncated_checkpoint_is_one_short_line(run, tmp_path):
    """A half-copied file: the file, what failed, and a hint, without torch's paragraph of advice."""
    folder, _ = run
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in folder.iterdir():
        (cut / f.name).write_bytes(f.read_bytes())
    g = cut / "CP_best_F1_all.pth"
    g.write_bytes(g.read_bytes()[: g.stat().st_size // 2])
    with pytest.raises(CheckpointError) as info:
        load_any(cut)
    message = str(info.value)
    assert message.startswith(f"{g}: cannot read checkpoint (") and message.endswith("is it damaged or incomplete?")
    assert "\n" not in message and len(message) < len(str(g)) + 200
    g.write_bytes(b"")  # a copy that never started
    with pytest.raises(CheckpointError, match=f"^{re.escape(f'{g}: empty file (an interrupted copy or download?)')}$"):
        load_any(cut)


def test_network_files_of_different_saves_are_refused(run, tmp_path):
    """G and G_V of epoch 3, G_A of another save (a copy gone wrong, or a run saving while it
    was read, three times over): one line naming each file's epoch."""
    folder, nets = run
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in folder.iterdir():
        (mixed / f.name).write_bytes(f.read_bytes())
    save_best(tmp_path / "later", nets, RunConfig(base_width=4, image_size=(64, 48)), epoch=7, val_f1=0.6)
    (mixed / "CP_best_F1_A.pth").write_bytes((tmp_path / "later" / "CP_best_F1_A.pth").read_bytes())
    with pytest.raises(CheckpointError) as info:
        load_any(mixed)
    assert str(info.value) == (f"{mixed}: its network files are of different saves (epochs CP_best_F1_all.pth 3, "
                               f"CP_best_F1_A.pth 7, CP_best_F1_V.pth 3): G, G_A and G_V must be one epoch's of one run")


def test_about_text_travels_with_the_bundle(run, tmp_path, capsys):
    folder, _ = run
    for out, shards in ((tmp_path / "one.pth", None), (tmp_path / "many.pth", 1)):
        path = export_bundle(folder, out, shard_mib=shards, about="seed 42, 1500 epochs; test F1 71.0")
        assert load_any(path)[1]["about"] == "seed 42, 1500 epochs; test F1 71.0"
        again = export_bundle(path, tmp_path / f"re-{out.name}")  # re-exported (e.g. re-sharded): kept
        assert load_any(again)[1]["about"] == "seed 42, 1500 epochs; test F1 71.0"
        assert load_any(export_bundle(path, tmp_path / f"new-{out.name}", about="new"))[1]["about"] == "new"
    bundle.main(["info", str(tmp_path / "many.index.json")])
    assert "about: seed 42, 1500 epochs; test F1 71.0" in capsys.readouterr().out
    # test.py and predict.py print a short text whole, a long one's beginning and where the rest is.
    assert bundle.about_line("seed 42", "b.pth") == "seed 42"
    long = "REDUCED run: " + "word " * 100
    shown = bundle.about_line(long, "b.pth")
    assert shown.startswith("REDUCED run: word") and len(shown) < bundle.ABOUT_SHOWN + 60
    assert shown.endswith("word ... (all of it: python -m scripts.bundle info b.pth)")
