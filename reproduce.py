"""One job that benchmarks, trains, tests and packages a reproduction within a wall-time budget.

Meant for a GPU you hold for a fixed time (a lent machine, a cluster job with a wall time):

    python reproduce.py --dataset DRIVE_AV --budget-minutes 9 --data-root packs --out OUT

Phases, each logged to OUT/logs/<phase>.log (a failed phase is logged and the later ones still run,
so whatever worked comes back):
  1. benchmark  benchmarks/benchmark.py, plain vs tuned, at the data set's size (--benchmark-minutes
                at most; 0 skips it)
  2. train      train.sh's protocol (batch 2, lr 8e-4, 10 % validation, --epochs planned) for every
                seed at once (PARALLEL=1), stopped by train.py's --time-limit so that testing and
                packaging still fit (--reserve-minutes); in mixed precision unless --no-amp (the
                fastest path: the budget buys the most epochs)
  3. test       test.sh on the seeds that saved a best epoch (the published protocol, fp32)
  4. package    OUT/results/<variant>/<Dataset>/<tag>/: run.json (the commands, machine, commit,
                epochs, wall times, the test table), summary.json and metrics.csv, each seed's
                TensorBoard scalars, the benchmark's JSON and the logs; and OUT/bundle/, the best
                seed's networks (by validation F1, never by test) as an fp16 bundle in shards of at
                most --shard-mib MiB. --archive packs results/ into OUT/results.tar.gz instead (few
                files to copy back).

Runs, checkpoints (last.pth: 400 MB per seed at width 32) and pictures stay in --work. Without
--budget-minutes every seed trains its whole schedule. Exit status: 0 when every phase worked, 1
otherwise (the logs say which), 2 for an error in the options.
"""
import argparse
import csv
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

ROOT = Path(__file__).resolve().parent
TABLE_METRICS = ("sensitivity", "auc_roc", "f1", "auc_pr", "mse")  # the published table's columns


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="DRIVE_AV", help="DRIVE_AV, LES-AV or HRF-AV (default %(default)s)")
    p.add_argument("--activation", choices=["sigmoid", "softmax"], default="sigmoid",
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
                   help="kept for testing and packaging after training (default %(default)s)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision training (default; --no-amp: fp32 as the paper and train.sh)")
    p.add_argument("--train-args", default="",
                   help="more train.py options for every seed, one string (e.g. \"--tf32\" or "
                        "\"--base-width 8 --image-size 256 256\")")
    p.add_argument("--data-root", default="./data", help="data folder or pack (default %(default)s)")
    p.add_argument("--work", default=None,
                   help="runs, checkpoints and test pictures (default ./reproduce_work/<tag>; must not exist)")
    p.add_argument("--out", default="./reproduce_out", help="what to keep: results and bundle (default "
                                                            "%(default)s; must be empty or new)")
    p.add_argument("--tag", default=None, help="results folder name (default <device kind>_<precision>_<date-time>)")
    p.add_argument("--shard-mib", type=float, default=15, help="bundle shard size (default %(default)s MiB)")
    p.add_argument("--archive", action="store_true", help="results as one OUT/results.tar.gz, not a folder")
    p.add_argument("--commit", default=None,
                   help="the code's commit, recorded in run.json (default: read from git; give it where the "
                        "tree was copied without .git)")
    return p


class Phase:
    """A child process in its own process group, its output in a log file, stopped at a deadline:
    SIGTERM first (train.py then ends its epoch and saves), SIGKILL ``grace`` seconds later."""

    def __init__(self, name, cmd, log_dir, cwd, env_vars=None):
        """``env_vars``: set for the child on top of this process's environment (and written into
        the command line that run.json records)."""
        self.name, self.log = name, Path(log_dir) / f"{name}.log"
        self.command = " ".join([f"{k}={shlex.quote(v)}" for k, v in (env_vars or {}).items()] +
                                [shlex.quote(str(c)) for c in cmd])
        self.started = time.time()
        with open(self.log, "w") as log:
            log.write(f"$ cd {shlex.quote(str(cwd))} && {self.command}\n")
            log.flush()
            self.proc = subprocess.Popen([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                         env={**os.environ, **(env_vars or {})}, start_new_session=True,
                                         stdin=subprocess.DEVNULL)

    def wait(self, timeout=None, grace=60.0):
        """The exit status; ``timeout`` seconds from now (None: no limit)."""
        try:
            return self.proc.wait(timeout=None if timeout is None else max(0.0, timeout))
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                return self.proc.wait()
        finally:
            self.seconds = time.time() - self.started

    def _signal(self, sig):
        with open(self.log, "a") as log:
            log.write(f"\n[reproduce.py: {signal.Signals(sig).name} at the deadline]\n")
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
    print(f"[reproduce {time.strftime('%H:%M:%S')}] {text}", flush=True)


def trained_seeds(run_root: Path, job: str, seeds):
    return [s for s in seeds if (run_root / f"{job}_seed{s}" / "CP_best_F1_all.pth").is_file()]


def seed_record(run_root: Path, runs_dir: Path, folder: str, job: str, seed: int, scalars_out: Path):
    """What run.json says of one seed: epochs, best epoch, validation F1, time per epoch; and
    its TensorBoard scalars written as CSV."""
    from scripts.checkpoint import read
    from scripts.scalars import read_scalars, write_scalars_csv
    run_dir = run_root / f"{job}_seed{seed}"
    record = {"seed": seed, "run": f"{folder}/{job}_seed{seed}"}
    if (run_dir / "last.pth").is_file():
        last = read(run_dir / "last.pth", mmap=True)
        record["epochs_done"] = last["epoch"] + 1
        record["steps"] = last["step"]
    if (run_dir / "CP_best_F1_all.pth").is_file():
        best = read(run_dir / "CP_best_F1_all.pth", mmap=True)
        record["best_epoch"], record["best_val_f1"] = best["epoch"], round(100 * best["val_f1"], 4)
    try:
        scalars = read_scalars(runs_dir / f"{folder}_{job}_seed{seed}")
    except FileNotFoundError:
        return record
    scalars_out.parent.mkdir(parents=True, exist_ok=True)
    write_scalars_csv(scalars, scalars_out)
    epoch_seconds = [v for _, _, v in scalars.get("time/epoch_seconds", [])]
    if epoch_seconds:
        record["train_minutes"] = round(sum(epoch_seconds) / 60, 2)
        record["median_epoch_seconds"] = round(statistics.median(epoch_seconds), 3)
        record.setdefault("epochs_done", len(epoch_seconds))
    return record


def test_table(summary: dict) -> dict:
    """The published table's five numbers: mean and std over the runs, percent."""
    return {m: summary["average"][m] for m in TABLE_METRICS}


def per_run_f1(metrics_csv: Path) -> dict:
    """Each run's test F1 (weighted average, mean over the images), from test.py's metrics.csv."""
    scores = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            scores.setdefault(row["run"], []).append(float(row["average/f1"]))
    return {run: statistics.fmean(v) for run, v in scores.items()}


class Job:
    """One reproduce.py job: its options, folders, budget, and the run.json it fills in."""

    def __init__(self, args, spec, data_root: Path, out: Path):
        import torch
        from scripts.device import amp_dtype_for
        from scripts.provenance import commit, machine
        self.args, self.budget = args, Budget(args.budget_minutes)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        amp = amp_dtype_for(torch.device(self.device), args.amp)
        self.precision = {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[amp]
        self.tag = args.tag or f"{self.device}_{self.precision}_{time.strftime('%Y%m%d-%H%M%S')}"
        self.work = Path(args.work or f"./reproduce_work/{self.tag}").resolve()
        if self.work.exists():
            raise FileExistsError(f"--work {self.work}: exists; runs are never trained over (another --work or --tag)")
        self.folder, self.job, self.out = spec.name, args.activation, out
        self.run_root = self.work / self.folder        # train.py's <output-root>/<Dataset>
        self.results = out / "results" / args.activation / self.folder / self.tag
        self.logs = self.results / "logs"
        for path in (self.work, self.logs):
            path.mkdir(parents=True)
        # What train.sh and test.sh read (they run in the work folder).
        self.env = {"PYTHON": sys.executable, "DATASET": self.folder, "ACTIVATION": args.activation,
                    "JOB": self.job, "DATA_ROOT": str(data_root)}
        self.data_root, self.failed = data_root, []
        self.record = {
            "what": f"reproduce.py: {self.folder}, {args.activation}, seeds {args.seeds}, {args.epochs} epochs "
                    f"planned, budget {args.budget_minutes or 'none'} minutes, {self.precision} training",
            "command": " ".join(shlex.quote(a) for a in [sys.executable, "reproduce.py", *args.argv]),
            "commit": args.commit or commit(), "machine": machine(self.device), "phases": {}}

    def run(self, phase: Phase, timeout, grace, ok=(0,)):
        status = phase.wait(timeout, grace)
        self.record["phases"][phase.name] = {"exit_status": status, "minutes": round(phase.seconds / 60, 2),
                                             "command": phase.command}
        log_line(f"{phase.name}: exit status {status} after {phase.seconds / 60:.1f} min (log {phase.log})")
        if status not in ok:
            self.failed.append(phase.name)
        return status

    def benchmark(self):
        """Plain vs tuned at the data set's size (and --train-args' width and size), time-boxed."""
        args = self.args
        cmd = [sys.executable, ROOT / "benchmarks" / "benchmark.py", "--dataset", self.folder, "--activation",
               args.activation, "--data-root", self.data_root, "--steps", args.benchmark_steps, "--warmup", "3",
               "--out", self.results / f"benchmark_{self.folder}_{self.device}.json",
               *shlex.split(benchmark_args(args.train_args))]
        limit = 60 * args.benchmark_minutes
        left = self.budget.left(args.reserve_minutes)
        self.run(Phase("benchmark", cmd, self.logs, self.work), limit if left is None else min(limit, left), grace=5)

    def train(self):
        """Every seed at once (train.sh, PARALLEL=1), stopped in time for testing and packaging."""
        args = self.args
        extra = args.train_args
        left = self.budget.left(args.reserve_minutes)
        if left is not None:
            extra += f" --time-limit {max(left, 1) / 60:.3f}"
        threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // len(args.seeds))))
        env = {**self.env, "SEEDS": " ".join(map(str, args.seeds)), "EPOCHS": str(args.epochs),
               "AMP": "1" if args.amp else "0", "PARALLEL": "1", "EXTRA_ARGS": extra.strip(),
               "OMP_NUM_THREADS": threads}  # the CPU's cores shared between the seeds
        # --time-limit stops each run before an epoch that would overrun; the deadline (a minute of
        # grace, then SIGTERM: the epoch ends and is saved) catches an epoch far longer than the last.
        self.run(Phase("train", ["sh", ROOT / "train.sh"], self.logs, self.work, env),
                 None if left is None else left + 60, grace=60, ok=(0, 3))  # 3: stopped by --time-limit
        for log in sorted((self.work / "logs").glob("*.log")):
            shutil.copy(log, self.logs / f"train_{log.name}")
        self.record["seeds"] = [seed_record(self.run_root, self.work / "runs", self.folder, self.job, s,
                                            self.results / f"seed{s}" / "scalars.csv.gz") for s in args.seeds]

    def test(self):
        """test.sh on the seeds that saved a best epoch; the summary into results and run.json."""
        done = trained_seeds(self.run_root, self.job, self.args.seeds)
        if not done:
            log_line("test: no seed saved a best epoch, nothing to test")
            self.failed.append("test")
            return
        env = {**self.env, "SEEDS": " ".join(map(str, done))}
        self.run(Phase("test", ["sh", ROOT / "test.sh"], self.logs, self.work, env), self.budget.left(0.25), grace=5)
        final = self.run_root / "Final_pre"
        if not (final / "summary.json").is_file():
            if "test" not in self.failed:
                self.failed.append("test")
            return
        for name in ("summary.json", "metrics.csv"):
            shutil.copy(final / name, self.results / name)
        summary = json.loads((final / "summary.json").read_text())
        self.record["test"] = {"runs": summary.get("runs"), "table": test_table(summary),
                               "f1_per_run": per_run_f1(final / "metrics.csv")}

    def package(self):
        """The best seed's bundle (by validation F1), run.json, and with --archive one tarball."""
        scored = [r for r in self.record["seeds"] if "best_val_f1" in r]
        if scored:
            try:
                self.record["bundle"] = write_bundle(max(scored, key=lambda r: r["best_val_f1"]), self)
            except Exception as exc:  # keep the results whatever happens to the bundle
                log_line(f"bundle: {exc}")
                self.failed.append("bundle")
        self.record["wall_minutes"] = round(self.budget.minutes(), 2)
        self.record["failed_phases"] = self.failed
        (self.results / "run.json").write_text(json.dumps(self.record, indent=1))
        if self.args.archive:
            with tarfile.open(self.out / "results.tar.gz", "w:gz") as tar:
                tar.add(self.out / "results", arcname="results")
            shutil.rmtree(self.out / "results")


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from scripts.config import ConfigError, dataset_spec
    try:
        spec = dataset_spec(args.dataset)
        if args.budget_minutes is not None and args.budget_minutes <= args.reserve_minutes:
            raise ConfigError(f"--budget-minutes {args.budget_minutes:g} leaves no time to train after "
                              f"--reserve-minutes {args.reserve_minutes:g}")
        if min(args.benchmark_minutes, args.reserve_minutes) < 0 or args.epochs < 1:
            raise ConfigError("--benchmark-minutes and --reserve-minutes must be 0 or more, --epochs at least 1")
        out = Path(args.out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(f"--out {out}: exists and is not an empty folder (nothing is overwritten)")
        data_root = Path(args.data_root).absolute()
        if not (data_root / spec.name).is_dir():
            raise ConfigError(f"--data-root {args.data_root}: no {spec.name} folder in it")
        job = Job(args, spec, data_root, out)
    except (ConfigError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if args.benchmark_minutes > 0:
        job.benchmark()
    job.train()
    job.test()
    job.package()
    log_line(f"done in {job.record['wall_minutes']:.1f} min; "
             + (f"failed: {', '.join(job.failed)}" if job.failed else "every phase worked") + f"; results in {out}")
    sys.exit(1 if job.failed else 0)


def benchmark_args(train_args: str) -> str:
    """The options of --train-args that the benchmark shares (width, input size, TF32)."""
    words, kept = shlex.split(train_args), []
    for i, w in enumerate(words):
        if w == "--base-width":
            kept += words[i:i + 2]
        elif w == "--image-size":
            kept += words[i:i + 3]
        elif w in ("--tf32", "--no-amp-discriminator"):
            kept.append(w)
    return " ".join(kept)


def write_bundle(best: dict, job: Job) -> dict:
    """The best seed by validation F1 as an fp16 bundle in shards, with an --about text saying
    how it was trained and what it scores."""
    from scripts.bundle import export_bundle
    args, record = job.args, job.record
    run = f"{job.job}_seed{best['seed']}"
    test_f1 = record.get("test", {}).get("f1_per_run", {}).get(run)
    hardware = record["machine"].get("gpu", record["machine"]["cpu_model"])
    done = best.get("epochs_done", 0)
    schedule = ("the whole schedule" if done >= args.epochs else
                f"a shortened schedule, not the paper's protocol ({done} of {args.epochs} epochs)")
    about = (f"{job.folder} {args.activation}, reproduce.py on {hardware}, {job.precision} training: seed "
             f"{best['seed']}, the best validation F1 ({best['best_val_f1']:.2f}) of seeds "
             f"{[r['seed'] for r in record['seeds'] if 'best_val_f1' in r]}; weights of epoch {best['best_epoch']}, "
             f"{schedule}; " + (f"{job.folder} test F1 {test_f1:.2f}; " if test_f1 is not None else "")
             + f"commit {record['commit']}")
    bundle_dir = job.out / "bundle"
    path = export_bundle(job.run_root / run, bundle_dir / f"{job.folder}_{args.activation}.pth", fp16=True,
                         shard_mib=args.shard_mib, about=about)
    return {"seed": best["seed"], "index": path.name, "files": sorted(p.name for p in bundle_dir.iterdir()),
            "about": about}


if __name__ == "__main__":
    main()
