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
PARALLEL=${PARALLEL:-0}               # 1: train all seeds at once (a GPU has room for several runs
                                      # at batch 2), each logging to ./logs/<DATASET>_<job>.log
set -e
train_seed() {
    $PYTHON train.py --e=$EPOCHS --batch-size=2 --learning-rate=8e-4 --v=10 --alpha=0.5 \
        --beta=1.1 --gama=0.08 --dataset=$DATASET --discriminator=unet --uniform=False \
        --job_name=${JOB}_seed$1 --seed_num=$1 --activation=$ACTIVATION \
        --data-root=$DATA_ROOT $FUSION_ARG $EXTRA_ARGS
}
pids=""
for seed in $SEEDS; do
    if [ "$PARALLEL" = 1 ]; then
        mkdir -p logs
        train_seed $seed > logs/${DATASET}_${JOB}_seed$seed.log 2>&1 &
        pids="$pids $!"
        echo "seed $seed: training in the background, log logs/${DATASET}_${JOB}_seed$seed.log"
    else
        train_seed $seed
    fi
done
failed=0
for pid in $pids; do wait $pid || failed=1; done
[ $failed = 0 ] || { echo "a seed failed: see its log in ./logs" >&2; exit 1; }
