#!/bin/sh
# BF-Net against the same GAN training without the binary branches (--fusion none), pixel and
# segment metrics side by side. Train both first:
#   sh train.sh                  # ./$DATASET/${ACTIVATION}_seed<N>
#   FUSION=none sh train.sh      # ./$DATASET/${ACTIVATION}_nofusion_seed<N>
# Only the seeds trained for both are compared (the others are named). EXTRA_ARGS: more test.py
# options for both tests (e.g. --amp).
DATASET=${DATASET:-DRIVE_AV}
ACTIVATION=${ACTIVATION:-sigmoid}
SEEDS=${SEEDS:-"42 40 38"}
DATA_ROOT=${DATA_ROOT:-./data}
# The checkout (this script's folder, through a link too): its .py files and .venv. Data, runs
# and outputs are relative to the current folder, as with python train.py.
HERE=$(dirname "$(readlink -f "$0" 2>/dev/null || echo "$0")")
if [ -z "${PYTHON:-}" ]; then         # the project's .venv (make install) when there is one
    if [ -x "$HERE/.venv/bin/python" ]; then PYTHON="$HERE/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"   # python -m scripts.* from any folder
set -e
FOLDER=$(PYTHONSAFEPATH=1 "$PYTHON" -m scripts.config "$DATASET")  # runs live under the data set's own name
BOTH=""; MISSING=""
for s in $SEEDS; do
    if [ -e "./$FOLDER/${ACTIVATION}_seed$s" ] && [ -e "./$FOLDER/${ACTIVATION}_nofusion_seed$s" ]; then
        BOTH="$BOTH $s"; else MISSING="$MISSING $s"; fi
done
if [ -z "$BOTH" ]; then
    echo "error: no seed of $SEEDS has both ./$FOLDER/${ACTIVATION}_seed<N> and ./$FOLDER/${ACTIVATION}_nofusion_seed<N>:" \
         "train them first (sh train.sh; FUSION=none sh train.sh)" >&2
    exit 2
fi
[ -z "$MISSING" ] || echo "note: seed(s)$MISSING lack one of the two runs: comparing seed(s)$BOTH" >&2
"$PYTHON" "$HERE/test.py" --dataset=$DATASET --job_name=$ACTIVATION --seeds $BOTH --data-root="$DATA_ROOT" \
    --output ./$FOLDER/Final_pre_bfnet $EXTRA_ARGS
"$PYTHON" "$HERE/test.py" --dataset=$DATASET --job_name=${ACTIVATION}_nofusion --seeds $BOTH --data-root="$DATA_ROOT" \
    --output ./$FOLDER/Final_pre_nofusion $EXTRA_ARGS
PYTHONSAFEPATH=1 "$PYTHON" -m scripts.compare ./$FOLDER/Final_pre_bfnet/summary.json ./$FOLDER/Final_pre_nofusion/summary.json \
    --names BF-Net "no fusion (ablation)"
