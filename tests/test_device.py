"""Device, precision and memory format choices (scripts/device.py) and the options that set them."""
import importlib.util
import subprocess
import sys
import time

import pytest
import torch

import predict
import train
from scripts import device as dev
from scripts import evaluate
from scripts.bfnet import Networks
from scripts.bundle import export_bundle, load_any
from scripts.config import RunConfig
from tests.conftest import ROOT

# test.py by path: the name "test" is also a package of the standard library.
_spec = importlib.util.spec_from_file_location("test_script", ROOT / "test.py")
test_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_script)


@pytest.mark.parametrize("onednn_bf16", [True, False])
def test_native_bf16_needs_the_cpu_instructions_and_onednn(monkeypatch, onednn_bf16):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn_bf16)
    assert not dev.cpu_has_native_bf16({"avx2", "avx512f", "avx512bw"})  # emulated bf16: slower than fp32
    assert dev.cpu_has_native_bf16({"avx512f", "avx512_bf16"}) == onednn_bf16
    assert dev.cpu_has_native_bf16({"amx_bf16", "amx_tile"}) == onednn_bf16


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16\nbugs\t\t: none\n")
    assert dev.cpu_flags(info) == {"fpu", "sse2", "avx512_bf16"}
    assert dev.cpu_flags(tmp_path / "missing") == set()


def test_cpu_trains_in_bf16_only_where_the_hardware_has_it_and_it_is_faster(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda flags=None: True)
    monkeypatch.setattr(dev, "cpu_bf16_speedup", lambda: 2.2)  # as on an AMD EPYC with AVX512-BF16
    assert dev.amp_dtype_for(cpu, True) == torch.bfloat16
    assert dev.amp_dtype_for(cpu, False) is None
    monkeypatch.setattr(dev, "cpu_bf16_speedup", lambda: 0.6)  # as on an Intel Xeon with AVX512-BF16, no AMX
    assert dev.amp_dtype_for(cpu, True) is None
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda flags=None: False)
    monkeypatch.setattr(dev, "cpu_bf16_speedup", lambda: pytest.fail("no bf16 instructions: nothing to measure"))
    assert dev.amp_dtype_for(cpu, True) is None


def test_the_bf16_speed_of_a_cpu_is_measured_once():
    dev.cpu_bf16_speedup.cache_clear()
    started = time.perf_counter()
    speedup = dev.cpu_bf16_speedup()
    assert speedup > 0 and time.perf_counter() - started < 5  # a quarter of a second on a 2-core VM
    assert dev.cpu_bf16_speedup() == speedup and dev.cpu_bf16_speedup.cache_info().hits == 1


def test_the_bf16_probe_leaves_the_random_generator_alone():
    """A seed gives the same networks whether or not this process has timed bf16 yet."""
    dev.cpu_bf16_speedup.cache_clear()
    torch.manual_seed(42)
    with torch.no_grad():  # also where gradients are off
        dev.cpu_bf16_speedup()
    after_probe = torch.rand(3)
    torch.manual_seed(42)
    assert torch.equal(torch.rand(3), after_probe)


@pytest.mark.parametrize("capability, device, amp, expected", [
    ("AVX2", "cpu", None, torch.contiguous_format),       # measured: channels_last backward 1.2-1.3x slower
    ("AVX2", "cpu", torch.bfloat16, torch.channels_last),
    ("AVX512", "cpu", None, torch.channels_last),         # measured: 1.3x faster in fp32
    ("AVX2", "cuda", None, torch.channels_last),
])
def test_training_memory_format_follows_the_hardware(monkeypatch, capability, device, amp, expected):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert dev.training_memory_format(torch.device(device), amp) == expected


def test_training_defaults_to_mixed_precision_and_evaluation_to_fp32():
    assert train.build_parser().parse_args([]).amp is True
    assert train.build_parser().parse_args(["--no-amp"]).amp is False
    assert test_script.build_parser().parse_args([]).amp is False
    assert test_script.build_parser().parse_args(["--amp"]).amp is True
    args = ["--weights", "w", "--input", "i", "--output", "o"]
    assert predict.build_parser().parse_args(args).amp is False
    assert predict.build_parser().parse_args(args + ["--amp"]).amp is True


def test_exact_fp32_turns_tf32_off_inside_only():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with dev.exact_fp32():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_training_on_cuda_uses_tf32_only_when_asked():
    """--no-amp is the paper's fp32: cuDNN's TF32 default would round the convolutions' inputs
    to a 10-bit mantissa on Ampere and later GPUs (the paper's T4 has no TF32)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        assert train.build_parser().parse_args(["--no-amp"]).tf32 is False
        train.cuda_settings(RunConfig())
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        train.cuda_settings(RunConfig(tf32=True))
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        assert dev.describe_precision(None, tf32=True) == "fp32 with TF32"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_validation_runs_in_fp32_while_training_uses_mixed_precision(real_data, tmp_path, monkeypatch):
    seen = {"train": [], "validate": []}
    real_step, real_predict = train.Trainer.step, evaluate.predict_probs

    def step(self, *a, **k):
        seen["train"].append(self.amp_dtype)
        return real_step(self, *a, **k)

    def predict_probs(*a, **k):
        seen["validate"].append(a[4] if len(a) > 4 else k.get("amp_dtype"))
        return real_predict(*a, **k)

    monkeypatch.setattr(dev, "cpu_bf16_pays_off", lambda: True)
    monkeypatch.setattr(train.Trainer, "step", step)
    monkeypatch.setattr(evaluate, "predict_probs", predict_probs)
    cfg = RunConfig(dataset="DRIVE_AV", data_root=str(real_data), job_name="p", epochs=1, batch_size=4,
                    image_size=(64, 64), base_width=4, validation=10, cache_dir=str(tmp_path / "cache"),
                    device="cpu")
    train.train(cfg, tmp_path / "runs", tmp_path)
    assert set(seen["train"]) == {torch.bfloat16} and seen["validate"] == [None]
    assert load_any(tmp_path / "DRIVE_AV" / "p")[1]["trained_precision"] == "bfloat16 autocast"


@pytest.mark.parametrize("native, speedup, why", [
    (False, None, "cpu has no native bf16/fp16 here"),
    (True, 0.6, "bf16 runs at 0.60x the speed of fp32 on this CPU (measured; mixed precision needs 1.2x)"),
])
def test_a_cpu_where_bf16_does_not_pay_trains_in_fp32_and_says_so(real_data, tmp_path, monkeypatch, capsys,
                                                                  native, speedup, why):
    """--amp is the default, but such a CPU gets no mixed precision: the run says why, the config
    keeps what was asked (amp), the best networks and the bundles made from them say what was done."""
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda flags=None: native)
    monkeypatch.setattr(dev, "cpu_bf16_speedup", lambda: speedup)
    cfg = RunConfig(dataset="DRIVE_AV", data_root=str(real_data), job_name="p", epochs=1, batch_size=4,
                    image_size=(64, 64), base_width=4, validation=10, cache_dir=str(tmp_path / "cache"),
                    device="cpu")
    train.train(cfg, tmp_path / "runs", tmp_path)
    assert f"note: mixed precision (--amp, the default): {why}, so this run trains in fp32" in capsys.readouterr().out
    saved = load_any(tmp_path / "DRIVE_AV" / "p")[1]
    assert saved["amp"] is True and saved["trained_precision"] == "fp32"
    bundle = export_bundle(tmp_path / "DRIVE_AV" / "p", tmp_path / "p.pth")
    assert load_any(bundle)[1]["trained_precision"] == "fp32"


def test_unavailable_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(dev.ConfigError, match="CUDA is not available on this machine$"):
        dev.pick_device("cuda")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a job script's, hiding the GPUs: said
    with pytest.raises(dev.ConfigError, match=r"CUDA is not available on this machine \(CUDA_VISIBLE_DEVICES='' "
                                              r"chooses the GPUs this process sees\)"):
        dev.pick_device("cuda")
    assert dev.pick_device("") == torch.device("cpu")
    with pytest.raises(dev.ConfigError, match="--device mps: this project runs on cpu and cuda"):
        dev.pick_device("mps")  # a device torch knows but this project was never run on
    with pytest.raises(dev.ConfigError, match="--device gpu: not a device; use cpu, cuda or cuda:N"):
        dev.pick_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(dev.ConfigError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        dev.pick_device("cuda:2")
    assert dev.pick_device("cuda:1") == torch.device("cuda", 1)


def test_channels_last_prediction_equals_contiguous(one_thread):
    torch.manual_seed(0)
    nets = Networks("sigmoid", 4).eval()
    x = torch.randn(1, 3, 32, 48)
    plain = nets.predict(x)
    nets = nets.to(memory_format=torch.channels_last)
    assert torch.allclose(nets.predict(x.contiguous(memory_format=torch.channels_last)), plain, atol=1e-5)


FREE_AND_ALLOCATE_AGAIN = """
import resource, sys, torch
sys.path.insert(0, sys.argv[1])
from scripts.device import keep_freed_memory, release_freed_memory
kept = keep_freed_memory() if sys.argv[2] == "keep" else False
for _ in range(20):  # 64 MiB blocks, above glibc's 32 MiB mmap limit; the heap settles in a few
    torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    torch.empty(64 << 20, dtype=torch.uint8).fill_(1)    # allocated, every page touched, freed
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5
resident = lambda: int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() >> 20
block = torch.empty(256 << 20, dtype=torch.uint8).fill_(1)
in_use = resident()
del block                                               # freed: how much went back to the kernel?
kept_mib = resident()
release_freed_memory()                                  # test.py's call between its two phases
print(kept, faults, in_use - kept_mib, kept_mib - resident())
"""


def test_freed_memory_is_reused_without_page_faults():
    """keep_freed_memory (train.py, test.py and predict.py call it): a large block freed and
    allocated again comes from the heap, not as fresh pages the kernel must zero on first touch
    (15 million such page faults in an fp32 training step at 592 x 592; benchmarks/README.md);
    release_freed_memory then gives what was kept back to the system. Each way runs in a process of its own, since the setting is for the whole process."""
    def faults_per_block(how):
        out = subprocess.run([sys.executable, "-c", FREE_AND_ALLOCATE_AGAIN, str(ROOT), how],
                             capture_output=True, text=True, check=True).stdout.split()
        return out[0] == "True", int(out[1]), int(out[2]), int(out[3])

    kept, faults, given_back_mib, released_mib = faults_per_block("keep")
    assert kept, "keep_freed_memory did not take effect on this Linux machine (glibc's mallopt refused)"
    assert faults < 100, f"{faults} page faults per 64 MiB block reused"
    assert given_back_mib < 50, f"{given_back_mib} MiB of a freed 256 MiB block went back to the kernel"
    assert released_mib > 200, f"release_freed_memory gave back only {released_mib} MiB of the kept 256 MiB"
    _, faults_by_default, given_back_by_default, _ = faults_per_block("default")
    assert faults_by_default > 10 * max(faults, 1), "the C library's default: a fresh mapping every time"
    assert given_back_by_default > 200, "the C library's default gives a freed large block back"


def test_a_busy_cpu_is_noted_unless_the_thread_count_is_chosen(monkeypatch):
    """Other jobs on the cores make torch's threads wait on each other (an epoch 177 s instead of
    5.5 s on a 2-core VM): train.py says so, with what helps."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(dev.os, "getloadavg", lambda: (2.1, 1.0, 0.5))
    note = dev.busy_cpu_note(threads=2, cores=2)
    assert note.startswith("the load average is 2.1 on 2 cores") and "OMP_NUM_THREADS=1" in note
    assert dev.busy_cpu_note(threads=1, cores=2) is None  # one thread waits on no other
    monkeypatch.setattr(dev.os, "getloadavg", lambda: (0.3, 0.2, 0.1))
    assert dev.busy_cpu_note(threads=2, cores=2) is None  # an idle machine
    monkeypatch.setattr(dev.os, "getloadavg", lambda: (2.1, 1.0, 0.5))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert dev.busy_cpu_note(threads=2, cores=2) is None  # the user chose


def test_the_cpu_memory_rule_fits_the_measured_runs_and_says_when_a_run_will_not_fit(monkeypatch, tmp_path):
    """Peak RSS of CPU training steps measured by the benchmarks (MiB, batch 2), against the rule;
    a run that needs more than the free memory is said at its start (the kernel kills it unsaid)."""
    measured = [((592, 592), 32, False, 11701), ((800, 720), 32, False, 18631), ((880, 592), 32, False, 17191),
                ((592, 592), 8, False, 3451), ((592, 592), 32, True, 6575), ((592, 592), 32, True, 7347),  # EPYC, AMX
                ((800, 720), 32, True, 10249), ((800, 720), 32, True, 11170)]
    for size, width, bf16, mib in measured:
        assert abs(dev.cpu_training_memory_mib(size, width, 2, bf16) / mib - 1) < 0.1, (size, width, bf16)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   23000000 kB\n")
    assert round(dev.available_memory_mib(meminfo)) == 22461
    monkeypatch.setattr(dev, "available_memory_mib", lambda: 22461.0)
    assert dev.cpu_memory_note((592, 592), 32, 2, False) is None
    assert dev.cpu_memory_note((592, 592), 32, 6, False) == (
        "a training step at 592 x 592, width 32, batch 6 in fp32 needs about 32 GiB of memory on a CPU, and 22 GiB "
        "are free: the system will likely kill it; a smaller --batch-size, --base-width or --image-size needs less "
        "(linear in each)")
    assert dev.cpu_memory_note((592, 592), 32, 2, False, processes=2).startswith("2 processes at 592 x 592")
    monkeypatch.setattr(dev, "available_memory_mib", lambda: None)  # not Linux: no note
    assert dev.cpu_memory_note((592, 592), 32, 6, False) is None
    assert round(dev.total_memory_mib(meminfo, tmp_path / "no_cgroup")) == 23438
    (tmp_path / "memory.max").write_text("8589934592\n")  # a container of 8 GiB
    assert dev.total_memory_mib(meminfo, tmp_path / "memory.max") == 8192
    (tmp_path / "memory.max").write_text("max\n")
    assert round(dev.total_memory_mib(meminfo, tmp_path / "memory.max")) == 23438
    monkeypatch.setattr(dev, "total_memory_mib", lambda: 23438.0)  # refused only above the whole memory
    assert dev.cpu_memory_error((592, 592), 32, 3, False) is None
    assert dev.cpu_memory_error((880, 592), 32, 6, False).startswith(
        "a training step at 880 x 592, width 32, batch 6 in fp32 needs about 48 GiB of memory on a CPU, more than "
        "this machine's 23 GiB")
    monkeypatch.setattr(dev, "total_memory_mib", lambda: None)
    assert dev.cpu_memory_error((880, 592), 32, 6, False) is None
