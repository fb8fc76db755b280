#!/bin/sh
# BF-Net against the same GAN training without the binary branches (--fusion none), pixel and
# segment metrics side by side. Train both first:
#   sh train.sh                  # ./$DATASET/${ACTIVATION}_seed<N>
#   FUSION=none sh train.sh      # ./$DATASET/${ACTIVATION}_nofusion_seed<N>
DATASET=${DATASET:-DRIVE_AV}
ACTIVATION=${ACTIVATION:-sigmoid}
SEEDS=${SEEDS:-"42 40 38"}
DATA_ROOT=${DATA_ROOT:-./data}
if [ -z "${PYTHON:-}" ]; then         # the project's .venv (make install) when there is one
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
set -e
$PYTHON test.py --dataset=$DATASET --job_name=$ACTIVATION --seeds $SEEDS --data-root=$DATA_ROOT \
    --output ./$DATASET/Final_pre_bfnet $EXTRA_ARGS
$PYTHON test.py --dataset=$DATASET --job_name=${ACTIVATION}_nofusion --seeds $SEEDS --data-root=$DATA_ROOT \
    --output ./$DATASET/Final_pre_nofusion $EXTRA_ARGS
$PYTHON -m scripts.compare ./$DATASET/Final_pre_bfnet/summary.json ./$DATASET/Final_pre_nofusion/summary.json \
    --names BF-Net "no fusion (ablation)"
