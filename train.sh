#!/bin/sh
# The published training protocol for one data set and three seeds (DESIGN.md section 4).
# Override any of these from the environment, e.g.  DATASET=HRF-AV ACTIVATION=softmax sh train.sh
DATASET=${DATASET:-DRIVE_AV}          # DRIVE_AV, LES-AV or HRF-AV
ACTIVATION=${ACTIVATION:-sigmoid}     # sigmoid (paper default) or softmax
SEEDS=${SEEDS:-"42 40 38"}
EPOCHS=${EPOCHS:-1500}
FUSION=${FUSION:-}                    # 'none': the ablation without binary branches (ablation.sh)
if [ "$FUSION" = "none" ]; then FUSION_ARG="--fusion=none"; DEFAULT_JOB=${ACTIVATION}_nofusion
else FUSION_ARG=""; DEFAULT_JOB=$ACTIVATION; fi
JOB=${JOB:-$DEFAULT_JOB}              # runs go to ./$DATASET/${JOB}_seed<N>
DATA_ROOT=${DATA_ROOT:-./data}
PYTHON=${PYTHON:-python3}
set -e
for seed in $SEEDS; do
    $PYTHON train.py --e=$EPOCHS --batch-size=2 --learning-rate=8e-4 --v=10 --alpha=0.5 \
        --beta=1.1 --gama=0.08 --dataset=$DATASET --discriminator=unet --uniform=False \
        --job_name=${JOB}_seed$seed --seed_num=$seed --activation=$ACTIVATION \
        --data-root=$DATA_ROOT $FUSION_ARG $EXTRA_ARGS
done
