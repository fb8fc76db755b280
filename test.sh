#!/bin/sh
# Test the runs of train.sh that exist (seeds $SEEDS) and report the table, mean ± std over
# several runs (README: Metrics).
# Runs are ./$DATASET/${JOB}_seed<N> for N in $SEEDS (default "42 40 38", train.sh's; seeds not
# trained are named and left out; with none trained, the shipped bundle unless JOB or SEEDS is
# set). A single run folder: python test.py --job_name NAME.
# EXTRA_ARGS: more test.py options, e.g. EXTRA_ARGS="--amp --output elsewhere" (train.sh's own
# EXTRA_ARGS, such as --resume, are not test.py options: set it per command, not exported).
# Variables: DATASET (default DRIVE_AV), ACTIVATION (sigmoid, softmax), SEEDS, JOB, DATA_ROOT,
# EXTRA_ARGS, PYTHON. No arguments; python test.py --help lists test.py's options.
case "${1:-}" in
    "") [ $# -le 1 ] || { echo "error: test.sh takes no arguments; sh test.sh --help lists its variables" >&2; exit 2; } ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "error: test.sh takes no arguments ($1): set its variables instead, e.g. DATASET=LES-AV sh test.sh;" \
            "sh test.sh --help lists them" >&2; exit 2 ;;
esac
DATASET=${DATASET:-DRIVE_AV}
ACTIVATION=${ACTIVATION:-sigmoid}
SEEDS_SET=${SEEDS:-}                  # a JOB or SEEDS named by the user are never replaced by the shipped bundle
SEEDS=${SEEDS:-"42 40 38"}
JOB_SET=${JOB:-}
JOB=${JOB:-$ACTIVATION}
DATA_ROOT=${DATA_ROOT:-./data}
# The checkout (this script's folder, through a link too): its .py files and .venv. Data, runs
# and outputs are relative to the current folder, as with python train.py.
HERE=$(dirname "$(readlink -f "$0" 2>/dev/null || echo "$0")")
if [ -z "${PYTHON:-}" ]; then         # the project's .venv (make install) when there is one
    if [ -x "$HERE/.venv/bin/python" ]; then PYTHON="$HERE/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"   # python -m scripts.* from any folder
set -e
# Run folders live under the data set's own name (an alias such as DRIVE-AV names DRIVE_AV).
# An unknown name is reported here, in one line (exit status 2), before anything else happens.
FOLDER=$(PYTHONSAFEPATH=1 "$PYTHON" -m scripts.config "$DATASET") || exit $?
# The seeds that were trained, and the ones that were not (e.g. after SEEDS=42 sh train.sh).
FOUND=""; MISSING=""
for s in $SEEDS; do
    if [ -e "./$FOLDER/${JOB}_seed$s" ]; then FOUND="$FOUND $s"; else MISSING="$MISSING $s"; fi
done
if [ -z "$FOUND" ]; then
    if [ -z "$JOB_SET" ] && [ -z "$SEEDS_SET" ]; then
        # No run of train.sh's default job here: test the shipped bundle (pretrained/) instead, into
        # its own folder so that no earlier test output is replaced.
        echo "no runs ./$FOLDER/${JOB}_seed*: testing the shipped bundle (test.py --pretrained)" >&2
        exec "$PYTHON" "$HERE/test.py" --dataset=$DATASET --pretrained --activation=$ACTIVATION --batch-size=2 \
            --data-root="$DATA_ROOT" $EXTRA_ARGS
    fi
    echo "error: no run ./$FOLDER/${JOB}_seed<N> for seed(s)$MISSING (sh train.sh trains them; JOB and SEEDS name the runs)" >&2
    exit 2
fi
# Test the seeds that were trained; name the ones that were not.
if [ -n "$MISSING" ] && [ -n "$FOUND" ]; then
    echo "note: no run ./$FOLDER/${JOB}_seed<N> for seed(s)$MISSING: testing seed(s)$FOUND (SEEDS=... chooses)" >&2
    SEEDS=$FOUND
fi
exec "$PYTHON" "$HERE/test.py" --dataset=$DATASET --job_name="$JOB" --seeds $SEEDS --batch-size=2 \
    --data-root="$DATA_ROOT" $EXTRA_ARGS
