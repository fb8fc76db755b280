"""One job that benchmarks, trains, tests and packages a reproduction within a wall-time budget.

Meant for a GPU you hold for a fixed time (a lent machine, a cluster job with a wall time):

    python reproduce.py --dataset DRIVE_AV --budget-minutes 9 --data-root packs --archive --out OUT

Phases, each logged to logs/<phase>.log in the results (a failed phase is logged and the later
ones still run, so whatever worked comes back):
  1. benchmark  benchmarks/benchmark.py, plain vs tuned, at the data set's size (--benchmark-minutes
                at most; 0 skips it)
  2. train      train.sh's protocol (batch 2, lr 8e-4, 10 % validation, --epochs planned) for every
                seed at once (PARALLEL=1), stopped by train.py's --time-limit so that testing and
                packaging still fit (--reserve-minutes); in mixed precision unless --no-amp (the
                fastest path: the budget buys the most epochs)
  3. test       test.sh on the seeds that saved a best epoch (the published protocol, fp32)
  4. package    results/<variant>/<Dataset>/<tag>/: run.json (the commands, machine, commit and code
                fingerprint, epochs, wall times, the test table), summary.json and metrics.csv, each
                seed's TensorBoard scalars, the benchmark's JSON and the logs; and bundle/, the best
                seed's networks (by validation F1, never by test) as an fp16 bundle in shards of at
                most --shard-mib MiB. --archive writes results/ as one results.tar.gz (few files to
                copy back), also when the job is stopped by SIGTERM, Ctrl-C or SIGHUP.

Runs, checkpoints (last.pth: 400 MB per seed at width 32) and pictures stay in --work. Without
--budget-minutes every seed trains its whole schedule. Exit status: 0 when every phase worked, 1
otherwise (run.json's failed_phases and the logs say which), 2 for an error in the options (one
line, before anything runs).
"""
import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

# Only modules without torch here, so that --help and a wrong option answer at once; the
# functions below import torch and what needs it where they start.
from scripts.cli import TIME_LIMIT_EXIT, ArgumentParser, signal_name
from scripts.config import VARIANTS, ConfigError, RunConfig, dataset_names, dataset_spec, seed_run_name, tensorboard_dir

ROOT = Path(__file__).resolve().parent
# train.py options that reproduce.py sets itself (so --train-args may not)
OWN_OPTIONS = {"dataset", "job_name", "seed", "epochs", "time_limit", "data_root", "output_root", "runs_dir",
               "activation", "amp", "resume"}
# train.sh's protocol, which the job reproduces: --train-args may not change it either (a smaller
# network or input for a rehearsal may, and run.json and the bundle then say so)
PROTOCOL_OPTIONS = {"batch_size", "learning_rate", "validation", "alpha", "beta", "gamma", "fusion", "uniform",
                    "rotation_step", "load"}
# The protocol's options as train.sh gives them to every seed (tests/test_reproduce.py holds the two together).
TRAIN_SH_PROTOCOL = "--batch-size=2 --learning-rate=8e-4 --v=10 --alpha=0.5 --beta=1.1 --gama=0.08"


def build_parser():
    p = ArgumentParser(prog="python reproduce.py", description=__doc__)
    p.add_argument("--dataset", default="DRIVE_AV", help=dataset_names() + " (default %(default)s)")
    p.add_argument("--activation", choices=list(VARIANTS), default="sigmoid",
                   help="variant (default %(default)s, the paper's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 40, 38],
                   help="one run per seed, all trained at once (default: train.sh's 42 40 38)")
    p.add_argument("--epochs", type=int, default=1500, help="planned epochs (default %(default)s, the paper's)")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="wall time for the whole job, all phases (default: none, every seed trains its schedule)")
    p.add_argument("--benchmark-minutes", type=float, default=1.5,
                   help="at most this long for the benchmark (default %(default)s; 0 skips it)")
    p.add_argument("--benchmark-steps", type=int, default=10, help="timed training steps (default %(default)s)")
    p.add_argument("--reserve-minutes", type=float, default=2.0,
                   help="kept for testing and packaging after training (default %(default)s; an epoch that "
                        "overruns may take up to a minute of it)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision training (default; --no-amp: fp32 as the paper and train.sh)")
    p.add_argument("--train-args", default="",
                   help="more train.py options for every seed, one string (e.g. \"--tf32\" or "
                        "\"--base-width 8 --image-size 256 256\"); checked before anything runs. Options that "
                        "reproduce.py sets or that would change train.sh's protocol (batch size, learning rate, "
                        "validation, loss weights, fusion, augmentation, --load) are refused")
    p.add_argument("--data-root", default="./data", help="data folder or pack (default %(default)s)")
    p.add_argument("--work", default=None,
                   help="runs, checkpoints and test pictures (default ./reproduce_work/<tag>; must not exist)")
    p.add_argument("--out", default="./reproduce_out", help="what to keep: results and bundle (default "
                                                            "%(default)s; must be empty or new)")
    p.add_argument("--tag", default=None, help="results folder name (default <device>_<precision>_<date-time>)")
    p.add_argument("--shard-mib", type=float, default=15, help="bundle shard size (default %(default)s MiB)")
    p.add_argument("--archive", action="store_true", help="results as one OUT/results.tar.gz, not a folder")
    p.add_argument("--commit", default=None,
                   help="the code's commit, recorded in run.json (default: read from git; give it where the "
                        "tree was copied without .git: run.json's code_sha256 then ties the two)")
    return p


class Interrupted(BaseException):
    """SIGTERM, Ctrl-C or SIGHUP (the terminal or SSH session closed) reached reproduce.py: stop
    the running phase, package what there is. The phases run in sessions of their own, which no
    terminal's signal reaches, so without this they would outlive reproduce.py. A BaseException,
    so that no phase's ``except Exception`` (one unreadable seed, say) takes it for a failure."""


HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Phase:
    """A child process in its own process group, its output in a log file. ``wait`` ends the
    whole group, a shell's children too: SIGTERM at the deadline (train.py then ends its epoch
    and saves), SIGKILL ``grace`` seconds later."""

    def __init__(self, name, cmd, log_dir, cwd, env_vars=None):
        """``env_vars``: set for the child on top of this process's environment (and written into
        the command line that run.json records)."""
        self.name, self.log = name, Path(log_dir) / f"{name}.log"
        self.command = " ".join([f"{k}={shlex.quote(v)}" for k, v in (env_vars or {}).items()] +
                                [shlex.quote(str(c)) for c in cmd])
        self.started, self.seconds = time.time(), 0.0
        with open(self.log, "w") as log:
            log.write(f"$ cd {shlex.quote(str(cwd))} && {self.command}\n")
            log.flush()
            self.proc = subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                         env={**os.environ, **(env_vars or {})}, start_new_session=True,
                                         stdin=subprocess.DEVNULL)

    def wait(self, timeout=None, grace=60.0):
        """The leader's exit status, once every process of the group has ended; ``timeout``
        seconds from now (None: no limit)."""
        try:
            self.proc.wait(timeout=None if timeout is None else max(0.0, timeout))
            gone = self._group_ended(time.time() + grace)  # a shell's background children too
        except subprocess.TimeoutExpired:
            gone = False
        self.stop(grace, already=gone)
        self.seconds = time.time() - self.started
        return self.proc.wait()

    def stop(self, grace, already=False):
        if not already:
            self._signal(signal.SIGTERM)
            if not self._group_ended(time.time() + grace):
                log_line(f"{self.name}: still running {grace:g} s after SIGTERM: killed")
                self._signal(signal.SIGKILL)
                self._group_ended(time.time() + 10)

    def _group_ended(self, end):
        """True once no process of the group is left; False at time ``end``."""
        while True:
            self.proc.poll()  # reap the leader, or it would count as left
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return True
            if time.time() >= end:
                return False
            time.sleep(0.2)

    def _signal(self, sig):
        with open(self.log, "a") as log:
            log.write(f"\n[reproduce.py: {signal_name(sig)} to the phase's processes]\n")
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


class Budget:
    def __init__(self, minutes):
        self.start = time.time()
        self.end = None if minutes is None else self.start + 60 * minutes

    def left(self, keep_minutes=0.0):
        """Seconds left before the end, keeping ``keep_minutes`` (None: no budget)."""
        return None if self.end is None else self.end - time.time() - 60 * keep_minutes

    def minutes(self):
        return (time.time() - self.start) / 60


def log_line(text):
    try:
        print(f"[reproduce {time.strftime('%H:%M:%S')}] {text}", flush=True)
    except OSError:  # the terminal closed (SIGHUP) or the pipe's reader left: go on without a console
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (the phases' logs and run.json
        # keep the record); what the failed print left in the buffer then drains there, not at exit


def check_train_args(text: str, spec, data_root: Path):
    """--train-args parsed by train.py's own parser and checked as train.py would check them
    before training, a pack's size included (one line on error); returns the parsed options,
    train.sh's protocol included."""
    import train
    from scripts.pack import check_pack_size, pack_subset, read_pack_info

    def refuse(message):
        raise ConfigError(f"--train-args: {message}")

    try:
        words = shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        refuse(str(exc))
    parser = train.build_parser()
    parser.error = refuse  # one line, not train.py's usage
    parsed, unknown = parser.parse_known_args([*TRAIN_SH_PROTOCOL.split(), *words])  # each seed's options
    if unknown:
        refuse(f"{' '.join(unknown)} is not a train.py option (python train.py --help)")
    own = sorted(train.given_options(words) & OWN_OPTIONS)
    if own:
        refuse(f"{', '.join(own)} is set by reproduce.py itself (see its --help)")
    protocol = sorted(train.given_options(words) & PROTOCOL_OPTIONS)
    if protocol:
        refuse(f"{', '.join(protocol)} would change train.sh's protocol, which this job reproduces, so it is "
               "not taken even at train.sh's value (train.py trains with any settings)")
    parsed.dataset = spec.name
    cfg = train.config_from_args(parsed)  # sizes, widths, rates: the errors train.py would give each seed
    subset = pack_subset(read_pack_info(data_root, spec))
    if subset:
        raise ConfigError(f"--data-root {data_root}: the pack holds only {subset}; this job needs the whole data set")
    check_pack_size(data_root, spec, cfg.input_size, '--train-args "--image-size {w} {h}"')  # packed at another size
    return parsed


def departures(parsed, spec) -> str:
    """The network settings of --train-args that differ from the paper's, in words ('' if none)."""
    import train
    parts = []
    paper_width = RunConfig().base_width
    if parsed.base_width != paper_width:
        parts.append(f"base width {parsed.base_width} instead of {paper_width}")
    size, paper = train.config_from_args(parsed).input_size, RunConfig(dataset=spec.name).input_size
    if tuple(size) != tuple(paper):
        parts.append(f"input {size[0]} x {size[1]} instead of {paper[0]} x {paper[1]}")
    return ", ".join(parts)


def benchmark_options(parsed) -> list:
    """The train.py options the benchmark shares: width, input size, TF32, D's precision."""
    options = ["--base-width", parsed.base_width]
    if parsed.image_size:
        options += ["--image-size", *parsed.image_size]
    if parsed.tf32:
        options.append("--tf32")
    if not parsed.amp_discriminator:
        options.append("--no-amp-discriminator")
    return options


def seed_record(run_root: Path, runs_dir: Path, dataset: str, job: str, seed: int, scalars_out: Path):
    """What run.json says of one seed: epochs, best epoch, validation F1, time per epoch; and
    its TensorBoard scalars written as CSV."""
    from scripts.checkpoint import LAST_STATE, NETWORK_FILES, read
    from scripts.scalars import read_scalars, write_scalars_csv
    run_name = seed_run_name(job, seed)
    run_dir = run_root / run_name
    record = {"seed": seed, "run": f"{dataset}/{run_name}", "epochs_done": 0}
    if (run_dir / LAST_STATE).is_file():  # saved every --save-every minutes and at a stop
        record["epochs_done"] = read(run_dir / LAST_STATE, mmap=True)["epoch"] + 1
    if (run_dir / NETWORK_FILES["G"]).is_file():
        best = read(run_dir / NETWORK_FILES["G"], mmap=True)
        record["best_epoch"], record["best_val_f1"] = best["epoch"], round(100 * best["val_f1"], 4)
    if not tensorboard_dir(runs_dir, dataset, run_name).is_dir():
        return record
    scalars = read_scalars(tensorboard_dir(runs_dir, dataset, run_name))
    scalars_out.parent.mkdir(parents=True, exist_ok=True)
    write_scalars_csv(scalars, scalars_out)
    epoch_seconds = [v for _, _, v in scalars.get("time/epoch_seconds", [])]  # one per validated epoch
    if epoch_seconds:
        record["epochs_done"] = max(record["epochs_done"], len(epoch_seconds))
        record["train_minutes"] = round(sum(epoch_seconds) / 60, 2)
        record["median_epoch_seconds"] = round(statistics.median(epoch_seconds), 3)
    return record


class Job:
    """One reproduce.py job: its options, folders, budget, and the run.json it fills in."""

    def __init__(self, args, budget: Budget, dataset: str, train_options, data_root: Path, out: Path):
        import torch
        from scripts.device import amp_dtype_for, describe_precision
        from scripts.provenance import code_fingerprint, commit, machine
        self.args, self.budget, self.dataset, self.out, self.data_root = args, budget, dataset, out, data_root
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        amp = amp_dtype_for(torch.device(self.device), args.amp)
        short = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[amp]
        self.precision = describe_precision(amp, train_options.amp_discriminator,
                                            train_options.tf32 and self.device == "cuda")
        self.departures = departures(train_options, dataset_spec(dataset))  # '' at the paper's network
        self.tag = args.tag or f"{self.device}_{short}_{time.strftime('%Y%m%d-%H%M%S')}"
        self.work = Path(args.work or f"./reproduce_work/{self.tag}").absolute()
        if self.work.exists():
            raise FileExistsError(f"--work {self.work}: exists; runs are never trained over (another --work or --tag)")
        self.job = args.activation                        # train.sh's JOB: runs <job>_seed<N>
        self.run_root = self.work / dataset                # train.py's <output-root>/<Dataset>
        # With --archive the results are gathered in the work folder and only the archive goes to --out.
        self.results_top = (self.work / "results") if args.archive else (out / "results")
        self.results = self.results_top / args.activation / dataset / self.tag
        self.logs = self.results / "logs"
        for path in (self.work, self.logs, out):
            path.mkdir(parents=True, exist_ok=True)
        self.train_options, self.failed, self.running = train_options, [], None
        # Every variable train.sh and test.sh read, so that none comes from the caller's environment.
        self.env = {"PYTHON": sys.executable, "DATASET": dataset, "ACTIVATION": args.activation, "JOB": self.job,
                    "DATA_ROOT": str(data_root), "FUSION": "", "EXTRA_ARGS": ""}
        self.record = {
            "what": f"reproduce.py: {dataset}, {args.activation}, seeds {args.seeds}, epochs planned {args.epochs}, "
                    + (f"budget {args.budget_minutes:g} minutes" if args.budget_minutes else "no budget")
                    + f", {self.precision} training"
                    + (f"; not the paper's network: {self.departures}" if self.departures else ""),
            "train_args": args.train_args,
            "units": "F1 and the test table in percent; minutes and seconds as the keys say",
            "command": " ".join(shlex.quote(a) for a in [sys.executable, "reproduce.py", *args.argv]),
            "commit": args.commit or commit(), "code_sha256": code_fingerprint(), "machine": machine(self.device),
            "phases": {}, "failed_phases": self.failed}

    def run(self, name, cmd, timeout, grace, env=None, ok=(0,)):
        """Start a phase and wait for it. A stop that comes while it starts waits until it is
        ``running`` (it runs in a session of its own: missed, it would outlive reproduce.py)."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            self.running = phase = Phase(name, cmd, self.logs, self.work, env)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.finish(phase, phase.wait(timeout, grace), ok)

    def stop_running(self, grace, why):
        """Stop the running phase, if any (SIGTERM, then SIGKILL ``grace`` seconds later), and record it."""
        if self.running:
            phase = self.running
            phase.stop(grace=grace)
            phase.seconds = time.time() - phase.started
            self.finish(phase, phase.proc.wait(), why=why)

    def finish(self, phase: Phase, status, ok=(0,), why=None):
        """Record a phase that ended (its command, exit status and minutes) and say how it ended."""
        self.running = None
        self.record["phases"][phase.name] = {"exit_status": status, "minutes": round(phase.seconds / 60, 2),
                                             "command": phase.command}
        how = why or {0: "done", TIME_LIMIT_EXIT: "stopped by --time-limit, as planned"}.get(status, f"exit status {status}")
        if why is None and status is not None and (status < 0 or status in (130, 143)):  # by the signal, or its code
            how = f"stopped by {signal_name(-status if status < 0 else status - 128)}"
        log_line(f"{phase.name}: {how} after {phase.seconds / 60:.1f} min (log {phase.log})")
        if status not in ok:
            self.failed.append(phase.name)

    def benchmark(self):
        """Plain vs tuned at the data set's size (and --train-args' width and size), time-boxed."""
        args = self.args
        cmd = [sys.executable, ROOT / "benchmarks" / "benchmark.py", "--dataset", self.dataset, "--activation",
               args.activation, "--data-root", self.data_root, "--steps", args.benchmark_steps,
               "--warmup", min(3, args.benchmark_steps),
               "--out", self.results / f"benchmark_{self.dataset}_{self.device}.json",
               *benchmark_options(self.train_options)]
        limit = 60 * args.benchmark_minutes
        left = self.budget.left(args.reserve_minutes + 0.5)  # half a minute of training at least
        self.run("benchmark", cmd, limit if left is None else min(limit, left), grace=5)

    def train(self):
        """Every seed at once (train.sh, PARALLEL=1), stopped in time for testing and packaging."""
        args = self.args
        extra = args.train_args
        # train.py's --time-limit counts from its own start, some seconds after this phase's (Python
        # and torch start first): it gets the time left less STARTUP_S. It stops each seed before an
        # epoch that would overrun; SIGTERM (the epoch ends and is saved, else SIGKILL after GRACE_S)
        # comes STARTUP_S + 20 s after that limit, for an epoch far longer than the last. So training
        # ends at most a minute into --reserve-minutes.
        STARTUP_S, GRACE_S = 20, 40
        left, limit = self.budget.left(args.reserve_minutes), None
        if left is not None:
            limit = max(left - STARTUP_S, 15)
            extra += f" --time-limit {limit / 60:.3f}"
        threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(args.seeds))))
        env = {**self.env, "SEEDS": " ".join(map(str, args.seeds)), "EPOCHS": str(args.epochs),
               "AMP": "1" if args.amp else "0", "PARALLEL": "1", "EXTRA_ARGS": extra.strip(),
               "OMP_NUM_THREADS": threads}  # the CPU's cores shared between the seeds
        self.run("train", ["sh", ROOT / "train.sh"], None if limit is None else limit + STARTUP_S + 20,
                 grace=GRACE_S, env=env, ok=(0, TIME_LIMIT_EXIT))

    def collect_training(self):
        """Each seed's record and scalars, and the seeds' logs, into the results."""
        for log in sorted((self.work / "logs").glob("*.log")):
            shutil.copy(log, self.logs / f"train_{log.name}")
        self.record["seeds"] = []
        for s in self.args.seeds:
            try:
                self.record["seeds"].append(seed_record(self.run_root, self.work / "runs", self.dataset, self.job, s,
                                                        self.results / f"seed{s}" / "scalars.csv.gz"))
            except Exception as exc:  # one unreadable run does not lose the others
                self.record["seeds"].append({"seed": s, "error": f"{type(exc).__name__}: {exc}"})
                self.failed.append(f"collect_training (seed {s})")

    def test(self):
        """test.sh on the seeds that saved a best epoch; the summary into results and run.json."""
        done = [r["seed"] for r in self.record.get("seeds", []) if "best_val_f1" in r]
        if not done:
            log_line("test: no seed saved a best epoch, nothing to test")
            self.failed.append("test")
            return
        env = {**self.env, "SEEDS": " ".join(map(str, done))}
        self.run("test", ["sh", ROOT / "test.sh"], self.budget.left(0.25), grace=5, env=env)
        final = self.run_root / "Final_pre"
        if not (final / "summary.json").is_file():
            if "test" not in self.failed:
                self.failed.append("test")
            return
        for name in ("summary.json", "metrics.csv"):
            shutil.copy(final / name, self.results / name)
        from scripts.metrics import TABLE_METRICS
        summary = json.loads((final / "summary.json").read_text())
        self.record["test"] = {"runs": summary["runs"], "table": {m: summary["average"][m] for m in TABLE_METRICS},
                               "per_run": summary["per_run"]}

    def bundle(self):
        """The best seed by validation F1 as an fp16 bundle in shards, with an --about text saying
        how it was trained and what it scores."""
        from scripts.bundle import export_bundle
        args, record = self.args, self.record
        scored = [r for r in record.get("seeds", []) if "best_val_f1" in r]
        if not scored:
            return
        best = max(scored, key=lambda r: r["best_val_f1"])
        run = seed_run_name(self.job, best["seed"])
        test_f1 = record.get("test", {}).get("per_run", {}).get(run, {}).get("f1")
        hardware = record["machine"].get("gpu", record["machine"]["cpu_model"])
        done = best["epochs_done"]
        schedule = ("the whole schedule" if done >= args.epochs else
                    f"a shortened schedule, not the paper's protocol ({done} of {args.epochs} epochs)")
        about = (f"{self.dataset} {args.activation}, reproduce.py on {hardware}, {self.precision} training"
                 + (f" ({self.departures}: not the paper's network)" if self.departures else "") + ": seed "
                 f"{best['seed']}, the best validation F1 ({best['best_val_f1']:.2f}) of seeds "
                 f"{[r['seed'] for r in scored]}; weights of epoch {best['best_epoch']}, {schedule}; "
                 + (f"{self.dataset} test F1 {test_f1:.2f}; " if test_f1 is not None else "")
                 + f"commit {record['commit']}")
        bundle_dir = self.out / "bundle"
        path = export_bundle(self.run_root / run, bundle_dir / f"{self.dataset}_{args.activation}.pth", fp16=True,
                             shard_mib=args.shard_mib, about=about)
        record["bundle"] = {"seed": best["seed"], "index": path.name, "about": about,
                            "files": sorted(p.name for p in bundle_dir.iterdir())}

    def write_record(self):
        self.record["wall_minutes"] = round(self.budget.minutes(), 2)
        (self.results / "run.json").write_text(json.dumps(self.record, indent=1))

    def archive(self):
        with tarfile.open(self.out / "results.tar.gz", "w:gz") as tar:
            tar.add(self.results_top, arcname="results")


def train_args_joined(argv):
    """``--train-args "--tf32"`` read as ``--train-args=--tf32``: argparse would take a value
    that starts with a dash for an option of its own ('expected one argument')."""
    argv, i = list(argv), 0
    while i < len(argv) - 1:
        if argv[i] == "--train-args":
            argv[i:i + 2] = [f"--train-args={argv[i + 1]}"]
        i += 1
    return argv


def parse_and_check(argv):
    """The options, checked before anything runs: (args, dataset folder, train.py options, data root, out)."""
    args = build_parser().parse_args(train_args_joined(sys.argv[1:] if argv is None else argv))
    args.argv = list(sys.argv[1:] if argv is None else argv)
    spec = dataset_spec(args.dataset)
    dataset = spec.name
    if args.epochs < 1 or not args.seeds or args.benchmark_steps < 1:
        raise ConfigError("--epochs, --seeds and --benchmark-steps need at least one")
    if min(args.benchmark_minutes, args.reserve_minutes) < 0 or args.shard_mib < 1:
        raise ConfigError("--benchmark-minutes and --reserve-minutes must be 0 or more, --shard-mib at least 1")
    if args.tag is not None and (args.tag in ("", ".", "..") or Path(args.tag).name != args.tag):
        raise ConfigError(f"--tag {args.tag!r}: must be a plain folder name (no '/')")
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        raise ConfigError(f"--budget-minutes {args.budget_minutes:g}: must be more than 0")
    if args.budget_minutes is not None and args.budget_minutes <= args.benchmark_minutes + args.reserve_minutes:
        raise ConfigError(f"--budget-minutes {args.budget_minutes:g} leaves no time to train after "
                          f"--benchmark-minutes {args.benchmark_minutes:g} and --reserve-minutes "
                          f"{args.reserve_minutes:g}")
    out = Path(args.out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {args.out}: exists and is not an empty folder (nothing is overwritten)")
    data_root = Path(args.data_root).absolute()
    if not (data_root / dataset).is_dir():
        raise ConfigError(f"--data-root {args.data_root}: no {dataset} folder in it")
    train_options = check_train_args(args.train_args, spec, data_root)
    check_cpu_memory(args, train_options)
    return args, dataset, train_options, data_root, out


def check_cpu_memory(args, train_options):
    """On a CPU the seeds train at once, each in its own process: refuse in one line, before the
    benchmark, what would not fit in the machine's memory together (each train.py checks only
    its own need). --train-args "--no-memory-check" tries all the same."""
    import train
    from scripts.device import amp_dtype_for, cpu_memory_error, pick_device
    if not train_options.memory_check or pick_device(train_options.device).type != "cpu":
        return
    cfg = train.config_from_args(train_options)  # (the data is not read here: a failing seed is the train phase's)
    too_large = cpu_memory_error(
        cfg.input_size, cfg.base_width, cfg.batch_size,
        amp_dtype_for(pick_device("cpu"), args.amp) is not None, len(args.seeds),
        less='fewer --seeds, or a smaller --base-width or --image-size in --train-args, need less (linear in each)',
        anyway='--train-args "--no-memory-check"')
    if too_large:
        raise ConfigError(f"--seeds {' '.join(map(str, args.seeds))} train at once, each in its own process: {too_large}")


def main(argv=None):
    budget = Budget(None)  # the clock starts now; the budget is set once the options are read
    try:
        args, dataset, train_options, data_root, out = parse_and_check(argv)
        budget.end = None if args.budget_minutes is None else budget.start + 60 * args.budget_minutes
        job = Job(args, budget, dataset, train_options, data_root, out)
    except (ConfigError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

    def interrupted(signum, frame):
        raise Interrupted(signal_name(signum))

    previous = {s: signal.signal(s, interrupted) for s in HANDLED_SIGNALS}
    phases = ([job.benchmark] if args.benchmark_minutes > 0 else []) + [job.train, job.collect_training,
                                                                         job.test, job.bundle]
    done = []

    def run_phase(phase):
        try:
            phase()
        except Exception as exc:  # keep going: whatever worked still comes back
            log_line(f"{phase.__name__}: {type(exc).__name__}: {exc}")
            job.failed.append(phase.__name__)
        done.append(phase)
        job.write_record()

    try:
        try:
            for phase in phases:
                run_phase(phase)
        except Interrupted as why:  # the running phase is stopped; the trained seeds still give a bundle
            try:  # (first thing: a second stop may come at once)
                log_line(f"{why}: stopping, packaging what there is")
                # a minute for the seeds to end their epoch and save, as at the deadline
                job.stop_running(grace=60, why=f"stopped by {why}")
                job.failed.append(f"interrupted ({why})")
                for phase in (job.collect_training, job.bundle):
                    if phase not in done:
                        run_phase(phase)
            except Interrupted as again:  # a second stop: end the running processes now, keep what is written
                for s in HANDLED_SIGNALS:  # a third one would only repeat it
                    signal.signal(s, signal.SIG_IGN)
                log_line(f"{again} again: ending now, without waiting or packaging further")
                job.stop_running(grace=0, why=f"killed by a second stop ({again})")
                if f"interrupted ({why})" not in job.failed:
                    job.failed.append(f"interrupted ({why})")
                job.failed.append(f"interrupted again ({again})")
    finally:  # the record and the archive, whole: a stop meanwhile is ignored
        for s in HANDLED_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        try:
            job.write_record()
            if args.archive:
                job.archive()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    if "bundle" in job.record:
        no_bundle = ""
    elif any(f.startswith("interrupted again") for f in job.failed):
        no_bundle = "; no bundle (packaging skipped by a second stop)"
    else:
        no_bundle = "; no bundle (no seed saved a best epoch)"
    log_line(f"done in {job.record['wall_minutes']:.1f} min; "
             + (f"failed: {', '.join(job.failed)}" if job.failed else "every phase worked") + no_bundle
             + f"; results in {out}")
    sys.exit(1 if job.failed else 0)


if __name__ == "__main__":
    main()
