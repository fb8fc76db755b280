"""Which device, which arithmetic and which memory layout a run gets, decided in one place.

- Training runs under mixed precision where the hardware makes it pay: on CUDA bf16 (fp16
  with grad scalers on GPUs without bf16); on a CPU bf16 autocast where it has bf16
  instructions (AVX512-BF16 or AMX) *and* a convolution measured on it runs at least 1.2x
  faster in bf16 than in fp32 (``cpu_bf16_speedup``, about 0.15 s, once per process; under
  torchrun rank 0 measures and the others take its choice). The flags alone do not tell: on a
  2-core AMD EPYC with AVX512-BF16 bf16 made the training step 2.2x faster, on a 2-core Intel
  Xeon with AVX512-BF16 but no AMX 1.4x slower (README, Performance). Other CPUs train in
  fp32, where emulated bf16 would be slower. ``--no-amp`` forces fp32.
- Evaluation (test.py, predict.py) runs in fp32 (TF32 off on GPUs) unless ``--amp`` is
  given, so the published-protocol numbers do not depend on which machine computed them.
  Validation during training is always fp32 (its F1 picks the checkpoint).
- Networks and inputs are channels_last for evaluation on every device, and for training on
  GPUs, with bf16 on CPUs, and on CPUs with AVX-512 (1.3x on the fp32 training step there).
  On CPUs without AVX-512 (AVX2) fp32 training stays contiguous: oneDNN's channels_last
  convolution backward made the step 1.2-1.3x slower on such a CPU (benchmarks/README.md).
- train.py, test.py and predict.py keep the large blocks their main thread frees for reuse
  (``keep_freed_memory``) instead of handing them back to the operating system and faulting
  them in again.
"""
import contextlib
import ctypes
import functools
import os
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from .config import ConfigError

MEMORY_FORMAT = torch.channels_last


def pick_device(name: str = "", local_rank: int = 0) -> torch.device:
    """``name`` as given (cuda, cuda:1, cpu), else CUDA when present (the local rank's GPU
    under torchrun), else the CPU."""
    if name:
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"--device {name}: not a device; use cpu, cuda or cuda:N") from None
        if device.type not in ("cpu", "cuda"):  # mps, xpu, ...: never tested with this project
            raise ConfigError(f"--device {name}: this project runs on cpu and cuda (cuda:N) only")
        if device.type == "cuda" and not torch.cuda.is_available():
            hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise ConfigError(f"--device {name}: CUDA is not available on this machine"
                              + (f" (CUDA_VISIBLE_DEVICES={hidden!r} chooses the GPUs this process sees)"
                                 if hidden is not None else ""))
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0)
    return torch.device("cpu")


def _c_library_function(name):
    """A function of the C library Python itself runs on (Linux only; glibc's malloc tuning), or
    None where there is no such function."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def keep_freed_memory() -> bool:
    """Serve large allocations from the heap and keep freed memory there (Linux, glibc).

    glibc hands every block above its mmap limit (at most 32 MiB) to the kernel when it is
    freed, and a new one comes back as fresh pages that the kernel zeroes on first touch. A
    training step at the paper's size allocates and frees hundreds of such activations (a
    2 x 32 x 592 x 592 fp32 map is 90 MB): on a 2-core AVX2 CPU, 15 million page faults and a
    third of the fp32 step's time (148 s against 98 s; benchmarks/allocator.py). With mmap off
    (glibc still maps a block the heap cannot grow to) and a 2 GiB trim threshold, freed blocks
    are reused instead: a training step's peak memory was about 8 % higher, inference's 23 %.
    The process keeps what it freed (up to 2 GiB free at the heap's top, and any holes), so a
    loop over inputs of growing sizes holds more than it uses (release_freed_memory gives it
    back). Only the main thread's arena is concerned (other threads' large blocks are mapped as
    before). Returns whether glibc's mallopt accepted both settings (False on other C libraries
    and systems: nothing changes there)."""
    mallopt = _c_library_function("mallopt")
    if mallopt is None:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def thread_counts_are_per_thread() -> bool:
    """Whether torch's thread count is each thread's own (its OpenMP backend, as in the Linux and
    Windows wheels): then a helper thread may run torch on one thread while the main thread
    keeps its count for the networks."""
    return "OpenMP" in torch.__config__.parallel_info()


def one_torch_thread_here():
    """A helper thread's initializer: torch on one thread in this thread, where that leaves the
    main thread's count alone (thread_counts_are_per_thread); elsewhere nothing, since setting
    it would slow the networks. Pair with thread_count_restored around the pool."""
    if thread_counts_are_per_thread():
        torch.set_num_threads(1)


@contextlib.contextmanager
def thread_count_restored():
    """Gives torch's thread count back on the way out, errors included: a helper thread that sets
    its own also sets the count that threads started later begin with."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def release_freed_memory() -> bool:
    """Give the memory that keep_freed_memory kept back to the system (glibc's malloc_trim):
    between two phases that do not reuse each other's blocks, such as test.py's predictions
    (the main thread) and its full-size scoring (worker threads, which allocate elsewhere).
    Returns whether it ran (False on other C libraries and systems)."""
    malloc_trim = _c_library_function("malloc_trim")
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo is not there."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16(flags: Optional[set] = None) -> bool:
    """True when this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16) and PyTorch's
    oneDNN backend can use it."""
    flags = cpu_flags() if flags is None else flags
    if not {"avx512_bf16", "amx_bf16"} & flags:
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def training_memory_format(device: torch.device, amp_dtype: Optional[torch.dtype]) -> torch.memory_format:
    """The memory layout of the networks and batches in training (see the module's notes)."""
    if device.type == "cpu" and amp_dtype is None and not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return torch.contiguous_format
    return MEMORY_FORMAT


def cuda_has_native_bf16() -> bool:
    """bf16 in hardware (Ampere and later); older GPUs get fp16 with grad scalers instead."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch 2.3: no such argument yet (2.4 added it), and no emulation counted
        return torch.cuda.is_bf16_supported()


BF16_MIN_SPEEDUP = 1.2  # below it a CPU keeps fp32: a margin over the noise of a shared machine


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup() -> float:
    """How many times faster a 3x3 convolution (64 channels, batch 2 at 64 x 64, channels_last,
    forward and backward, as in training) runs under bf16 autocast than in fp32 on this CPU:
    the best of five turns each, fp32 and bf16 in turns after a warm-up, about 0.15 s on a
    2-core VM. Measured once per process. It leaves torch's random generator as it found it, so
    a seed gives the same networks whether or not the probe ran."""
    with torch.random.fork_rng(devices=[]), torch.inference_mode(False), torch.enable_grad():
        conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=MEMORY_FORMAT)
        x = torch.randn(2, 64, 64, 64).contiguous(memory_format=MEMORY_FORMAT).requires_grad_()

        def seconds(dtype):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                y = conv(x)
            y.float().sum().backward()
            return time.perf_counter() - start

        times = {None: [], torch.bfloat16: []}
        for turn in range(6):
            for dtype in times:
                s = seconds(dtype)
                if turn:  # the first turn builds oneDNN's kernels
                    times[dtype].append(s)
    return min(times[None]) / min(times[torch.bfloat16])


def cpu_bf16_pays_off() -> bool:
    """bf16 autocast for this CPU: native bf16 (cpu_has_native_bf16), and measured at least
    BF16_MIN_SPEEDUP times faster than fp32 (cpu_bf16_speedup)."""
    return cpu_has_native_bf16() and cpu_bf16_speedup() >= BF16_MIN_SPEEDUP


def amp_dtype_for(device: torch.device, enabled: bool) -> Optional[torch.dtype]:
    """The autocast dtype for ``device``, or None for fp32 (disabled, or no mixed precision that
    pays on it: cpu_bf16_pays_off)."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_native_bf16() else torch.float16
    if device.type == "cpu" and cpu_bf16_pays_off():
        return torch.bfloat16
    return None


def busy_cpu_note(threads: int, cores: int) -> Optional[str]:
    """A note when other jobs already keep this machine's cores busy (the load average over the
    last minute at least ``cores`` - ``threads`` / 2) and the thread count is torch's own choice.
    torch's threads then wait on each other: on a 2-core VM with two busy processes beside it, a
    small training epoch took 177 s instead of 5.5 s with OMP_NUM_THREADS=1 (8-9 s with
    OMP_WAIT_POLICY=PASSIVE, which costs 1.7x when the machine is idle: README, Train)."""
    if os.environ.get("OMP_NUM_THREADS") or not hasattr(os, "getloadavg"):
        return None
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    if threads < 2 or load < cores - threads / 2:
        return None
    return (f"the load average is {load:.1f} on {cores} cores: other jobs share this CPU, and torch's {threads} "
            f"threads may then wait on each other for minutes; OMP_NUM_THREADS=1 (or fewer threads than the idle "
            f"cores) keeps it steady")


# Peak memory (RSS) of a training step on a CPU, from measured runs (benchmarks/results/*.json):
# fp32, batch 2, width 32: 11,701 MiB at 592 x 592, 18,631 at LES-AV's 800 x 720, 17,191 at
# HRF-AV's 880 x 592; 3,451 at width 8; bf16 6,575-7,347 (592 x 592), 10,249-11,170 (LES-AV). About
# 1,000 MiB of the process, then linear in the pixels, the width and the batch (within 10 % of
# those runs); bf16 a little over half.
CPU_STEP_BASE_MIB = 1000
CPU_STEP_MIB_PER_IMAGE = 5350   # fp32, width 32, 592 x 592
CPU_BF16_MEMORY = 0.58


def cpu_training_memory_mib(size, base_width: int, batch_size: int, bf16: bool) -> float:
    """About the peak memory of one process's CPU training step (the rule above)."""
    per_image = CPU_STEP_MIB_PER_IMAGE * (size[0] * size[1] / 592 ** 2) * (base_width / 32)
    return CPU_STEP_BASE_MIB + batch_size * per_image * (CPU_BF16_MEMORY if bf16 else 1.0)


def _meminfo_mib(field: str, meminfo: Path) -> Optional[float]:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory_mib(meminfo: Path = Path("/proc/meminfo")) -> Optional[float]:
    """The memory the kernel can give without swapping (MemAvailable); None where unknown."""
    return _meminfo_mib("MemAvailable", meminfo)


def total_memory_mib(meminfo: Path = Path("/proc/meminfo"),
                     cgroup_limit: Path = Path("/sys/fs/cgroup/memory.max")) -> Optional[float]:
    """The memory this process may ever have: the machine's (MemTotal), or a container's limit
    (cgroup v2 memory.max) where lower; None where unknown."""
    total = _meminfo_mib("MemTotal", meminfo)
    try:
        limit = int(cgroup_limit.read_text().strip()) / 2 ** 20  # "max": no limit (ValueError)
    except (OSError, ValueError):
        return total
    return limit if total is None else min(total, limit)


def _cpu_step_need(size, base_width, batch_size, bf16, processes):
    """(MiB, the run in words) of a CPU training run's steps, for the notes below."""
    who = f"{processes} processes" if processes > 1 else "a training step"
    return (processes * cpu_training_memory_mib(size, base_width, batch_size, bf16),
            f"{who} at {size[0]} x {size[1]}, width {base_width}, batch {batch_size} in {'bf16' if bf16 else 'fp32'}")


LESS_MEMORY = "a smaller --batch-size, --base-width or --image-size needs less (linear in each)"


def cpu_memory_note(size, base_width: int, batch_size: int, bf16: bool, processes: int = 1) -> Optional[str]:
    """A note when a CPU training run will likely need more memory than this machine has free
    (the kernel then kills it, without a word from Python). ``batch_size``: each process's share."""
    (need, run), free = _cpu_step_need(size, base_width, batch_size, bf16, processes), available_memory_mib()
    if free is None or need <= free:
        return None
    return (f"{run} needs about {need / 1024:.0f} GiB of memory on a CPU, and {free / 1024:.0f} GiB are free: the "
            f"system will likely kill it; {LESS_MEMORY}")


def cpu_memory_error(size, base_width: int, batch_size: int, bf16: bool, processes: int = 1,
                     less: str = LESS_MEMORY, anyway: str = "--no-memory-check") -> Optional[str]:
    """Why a CPU training run cannot fit at all: it needs more memory than the machine has (the
    kernel would kill it at its first step, exit 137); None when it might fit. The rule is within
    about 10 % of the measured runs, so only a need above the whole memory is refused. ``less``
    and ``anyway``: the options that help, as the caller's command line spells them."""
    (need, run), total = _cpu_step_need(size, base_width, batch_size, bf16, processes), total_memory_mib()
    if total is None or need <= total:
        return None
    return (f"{run} needs about {need / 1024:.0f} GiB of memory on a CPU, more than this machine's "
            f"{total / 1024:.0f} GiB: the system would kill it at its first step; {less} "
            f"({anyway} tries all the same)")


def no_amp_reason(device: torch.device) -> str:
    """Why ``--amp`` gives fp32 on ``device`` (amp_dtype_for returned None), for a note."""
    if device.type == "cpu" and cpu_has_native_bf16():
        return (f"bf16 runs at {cpu_bf16_speedup():.2f}x the speed of fp32 on this CPU (measured; mixed precision "
                f"needs {BF16_MIN_SPEEDUP}x)")
    return f"{device.type} has no native bf16/fp16 here"


def describe_precision(amp_dtype: Optional[torch.dtype], amp_discriminator: bool = True, tf32: bool = False) -> str:
    if amp_dtype is None:
        return "fp32 with TF32" if tf32 else "fp32"
    return f"{str(amp_dtype).replace('torch.', '')} autocast" + ("" if amp_discriminator else " (D in fp32)")


def set_tf32(allowed: bool):
    """Whether CUDA's fp32 convolutions and matrix products may round their inputs to TF32
    (10-bit mantissa; Ampere and later). cuDNN allows it by default; the paper trained on a T4,
    which has no TF32, so training turns it off unless --tf32 asks for it."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed


@contextlib.contextmanager
def exact_fp32():
    """fp32 arithmetic that is the same on every machine (to rounding): CUDA's TF32 matrix
    mode is off inside, and restored after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
