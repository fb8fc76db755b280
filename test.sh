#!/bin/sh
# Test the three runs of train.sh and report mean ± std over them (DESIGN.md section 6).
DATASET=${DATASET:-DRIVE_AV}
ACTIVATION=${ACTIVATION:-sigmoid}
SEEDS=${SEEDS:-"42 40 38"}
JOB=${JOB:-$ACTIVATION}
DATA_ROOT=${DATA_ROOT:-./data}
if [ -z "${PYTHON:-}" ]; then         # the project's .venv (make install) when there is one
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PRETRAINED=${PRETRAINED:-pretrained/${DATASET}_${ACTIVATION}.index.json}   # the shipped bundle, if any
set -e
first_seed=${SEEDS%% *}
if [ ! -d "./$DATASET/${JOB}_seed$first_seed" ] && [ -f "$PRETRAINED" ]; then
    echo "no runs ./$DATASET/${JOB}_seed*: testing the shipped bundle $PRETRAINED" >&2
    exec $PYTHON test.py --dataset=$DATASET --load "$PRETRAINED" --batch-size=2 \
        --data-root=$DATA_ROOT $EXTRA_ARGS
fi
$PYTHON test.py --dataset=$DATASET --job_name=$JOB --seeds $SEEDS --batch-size=2 \
    --data-root=$DATA_ROOT $EXTRA_ARGS
