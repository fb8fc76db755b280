#!/bin/sh
# The published training protocol for one data set and three seeds (README: Train): one run per
# seed, ./<Dataset>/<JOB>_seed<N>. No arguments: set these in the environment, e.g.
#   DATASET=HRF-AV ACTIVATION=softmax sh train.sh
#   DATASET     DRIVE_AV (default), LES-AV or HRF-AV
#   ACTIVATION  sigmoid (default, the paper's) or softmax
#   SEEDS       "42 40 38" (default), spaces between
#   EPOCHS      1500 (default); a resumed seed keeps its own unless EPOCHS is set
#   FUSION      none: the ablation without binary branches (ablation.sh)
#   JOB         the runs' name (default: ACTIVATION, with FUSION=none ACTIVATION_nofusion)
#   DATA_ROOT   ./data (default)
#   AMP         0 (default): fp32, as the paper; 1: mixed precision, faster
#   PARALLEL    1: all seeds at once, logs in ./logs (for a GPU, not a CPU)
#   EXTRA_ARGS  more train.py options for every seed; the same with --resume added continues every
#               seed (one never started then starts with those options)
#   PYTHON      the interpreter (default: the checkout's .venv, else python3)
# Ctrl-C or SIGTERM to this script stops the seed(s) training at the end of the epoch, last.pth
# saved (a second one, a second or more later: at once), starts no other seed, and ends by that
# signal (exit status 130 or 143 in a shell); the same variables with --resume added to EXTRA_ARGS
# continue (the message says how).
case "${1:-}" in
    "") [ $# -le 1 ] || { echo "error: train.sh takes no arguments; sh train.sh --help lists its variables" >&2; exit 2; } ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "error: train.sh takes no arguments ($1): set its variables instead, e.g. DATASET=HRF-AV sh train.sh;" \
            "sh train.sh --help lists them" >&2; exit 2 ;;
esac
DATASET=${DATASET:-DRIVE_AV}          # DRIVE_AV, LES-AV or HRF-AV
ACTIVATION=${ACTIVATION:-sigmoid}     # sigmoid (paper default) or softmax
SEEDS=${SEEDS:-"42 40 38"}
EPOCHS_SET=${EPOCHS:-}                # a resumed seed keeps its own planned epochs unless EPOCHS is set
EPOCHS=${EPOCHS:-1500}
FUSION=${FUSION:-}                    # 'none': the ablation without binary branches (ablation.sh)
if [ "$FUSION" = "none" ]; then FUSION_ARG="--fusion=none"; DEFAULT_JOB=${ACTIVATION}_nofusion
else FUSION_ARG=""; DEFAULT_JOB=$ACTIVATION; fi
JOB=${JOB:-$DEFAULT_JOB}              # runs go to ./$DATASET/${JOB}_seed<N>
DATA_ROOT=${DATA_ROOT:-./data}
# The checkout (this script's folder, through a link too): its .py files and .venv. Data, runs
# and outputs are relative to the current folder, as with python train.py.
HERE=$(dirname "$(readlink -f "$0" 2>/dev/null || echo "$0")")
if [ -z "${PYTHON:-}" ]; then         # the project's .venv (make install) when there is one
    if [ -x "$HERE/.venv/bin/python" ]; then PYTHON="$HERE/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"   # python -m scripts.* from any folder
AMP=${AMP:-0}                         # 0: fp32 training, as the paper (bf16 against fp32: two reduced
                                      # checks disagree, README, Performance); 1: mixed precision, faster
if [ "$AMP" = 1 ]; then PRECISION_ARG="--amp"; else PRECISION_ARG="--no-amp"; fi
PARALLEL=${PARALLEL:-0}               # 1: train all seeds at once, each logging to ./logs/<DATASET>_<job>_seed<N>.log;
                                      # for a GPU (room for several runs at batch 2), not a CPU (shared cores)
# EXTRA_ARGS go to every seed's train.py: --time-limit is a budget per seed (exit status 3 when it
# stopped one; the remaining seeds are not started). The same EXTRA_ARGS with --resume added
# continue: each seed with a last.pth is resumed to its own planned epochs (EPOCHS set: to those;
# a finished one returns at once), a seed never started is started with those options.
EXTRA_ARGS=${EXTRA_ARGS:-}
RESUME=0
case " $EXTRA_ARGS " in *" --resume "*)
    RESUME=1; EXTRA_ARGS=$(echo " $EXTRA_ARGS " | sed 's/ --resume / /g');;
esac
set -e
FOLDER=$(PYTHONSAFEPATH=1 "$PYTHON" -m scripts.config "$DATASET")  # runs live under the data set's own name
train_seed() {  # run in a subshell: it becomes train.py (exec), so that signals reach the training
    resume_arg=""; epochs_arg="--e=$EPOCHS"
    if [ "$RESUME" = 1 ]; then
        if [ -e "./$FOLDER/${JOB}_seed$1/last.pth" ]; then
            resume_arg="--resume"
            if [ -z "$EPOCHS_SET" ]; then epochs_arg=""; fi
        elif [ ! -e "./$FOLDER/${JOB}_seed$1" ]; then
            echo "seed $1: not started yet, starting it with EXTRA_ARGS=\"$(echo $EXTRA_ARGS)\" (a resumed seed keeps" \
                 "its own saved options)" >&2; fi
    fi
    exec "$PYTHON" "$HERE/train.py" $epochs_arg --batch-size=2 --learning-rate=8e-4 --v=10 --alpha=0.5 \
        --beta=1.1 --gama=0.08 --dataset=$DATASET --discriminator=unet --uniform=False \
        --job_name="${JOB}_seed$1" --seed_num=$1 --activation=$ACTIVATION \
        --data-root="$DATA_ROOT" $PRECISION_ARG $FUSION_ARG $resume_arg $EXTRA_ARGS
}
# What continues a stopped seed: the same variables, EXTRA_ARGS with --resume added (a seed never
# started, or stopped before its first save, then starts with the same options, not with
# train.sh's defaults).
CONTINUE="the same variables (DATASET, SEEDS, ...) with EXTRA_ARGS=\"${EXTRA_ARGS:+$(echo $EXTRA_ARGS) }--resume\""
report() {  # seed, exit status
    if [ "$2" = 3 ]; then echo "seed $1: stopped by --time-limit; $CONTINUE continue it" >&2
    elif { [ "$2" = 130 ] || [ "$2" = 143 ]; } && [ ! -e "./$FOLDER/${JOB}_seed$1/last.pth" ]; then
        echo "seed $1: stopped before its first epoch was saved; $CONTINUE start it again" >&2
    elif [ "$2" = 130 ] || [ "$2" = 143 ]; then echo "seed $1: stopped; $CONTINUE continue it" >&2
    elif [ "$2" != 0 ]; then echo "seed $1: failed (exit status $2)${3:+, see $3}" >&2; fi
}
# Each seed trains in the background (its pid in $pids) while this script waits, so that a signal
# to the script is passed on, as SIGTERM. The training ignores SIGINT (trap '' INT, kept through
# exec): a Ctrl-C at the terminal, which reaches the whole process group, then stops it once,
# through this script, not at once by two signals.
pids=""; stopped_by=""
stop() {  # INT or TERM: the signal this script ends by, once the seeds have stopped
    stopped_by=${stopped_by:-$1}
    for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap 'stop INT' INT
trap 'stop TERM' TERM
finish() {  # pid: its exit status, once it has ended (a signal to this script ends a wait early)
    status=0; wait "$1" || status=$?
    while kill -0 "$1" 2>/dev/null; do status=0; wait "$1" || status=$?; done
    return $status
}
end() {  # exit status: the script ends by the signal that stopped it, if any (a calling loop stops too)
    if [ -n "$stopped_by" ]; then trap - INT TERM; kill -s "$stopped_by" $$; fi
    exit "$1"
}
jobs=""
for seed in $SEEDS; do
    [ -z "$stopped_by" ] || break             # a signal between two seeds: no other one starts
    if [ "$PARALLEL" = 1 ]; then
        mkdir -p logs
        log="logs/${DATASET}_${JOB}_seed$seed.log"
        echo "== $(date '+%Y-%m-%d %H:%M:%S') train.sh, seed $seed ==" >> "$log"
        (trap '' INT; train_seed $seed) >> "$log" 2>&1 &     # appended: a resumed seed's log keeps its earlier sessions
        pids="$pids $!"; jobs="$jobs $seed:$!"
        [ -z "$stopped_by" ] || stop "$stopped_by"        # a signal while it started: it stops too
        echo "seed $seed: training in the background, log $log"
    else
        (trap '' INT; train_seed $seed) & pids=$!
        [ -z "$stopped_by" ] || stop "$stopped_by"
        status=0; finish $pids || status=$?
        pids=""
        report $seed $status
        [ -z "$stopped_by" ] || end $status
        [ $status = 0 ] || exit $status
    fi
done
worst=0
for job in $jobs; do
    seed=${job%%:*}; status=0
    finish ${job#*:} || status=$?
    report $seed $status "logs/${DATASET}_${JOB}_seed$seed.log"
    if [ $status = 0 ]; then echo "seed $seed: done, log logs/${DATASET}_${JOB}_seed$seed.log"; fi
    if [ $status != 0 ] && { [ $worst = 0 ] || [ $worst = 3 ]; }; then worst=$status; fi  # failures first
done
end $worst
