#!/bin/sh
# BF-Net against the same GAN training without the binary branches (--fusion none), pixel and
# segment metrics side by side. Train both first:
#   sh train.sh                  # ./$DATASET/${ACTIVATION}_seed<N>
#   FUSION=none sh train.sh      # ./$DATASET/${ACTIVATION}_nofusion_seed<N>
# Only the seeds trained for both are compared (the others are named). Writes both tests to
# ./<Dataset>/Final_pre_bfnet and ./<Dataset>/Final_pre_nofusion, replacing an earlier ablation's
# once both succeeded, then prints the comparison (python -m scripts.compare).
# Variables: DATASET, ACTIVATION (sigmoid, softmax), SEEDS (spaces between), DATA_ROOT, PYTHON;
# EXTRA_ARGS: more test.py options for both tests (e.g. --amp; not --output).
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
case "$ACTIVATION" in sigmoid|softmax) ;;
    *) echo "error: ACTIVATION=$ACTIVATION: the variants are sigmoid and softmax" >&2; exit 2 ;; esac
case "$SEEDS" in *,*) echo "error: SEEDS=\"$SEEDS\": separate the seeds with spaces (SEEDS=\"42 40 38\")" >&2; exit 2 ;; esac
case " $EXTRA_ARGS " in *" --output"*)
    echo "error: EXTRA_ARGS: no --output: ablation.sh writes its two tests to ./$FOLDER/Final_pre_bfnet and" \
         "./$FOLDER/Final_pre_nofusion itself" >&2; exit 2 ;; esac
BF=./$FOLDER/${ACTIVATION}_seed; NF=./$FOLDER/${ACTIVATION}_nofusion_seed   # + <N>: the runs of train.sh
BOTH=""; NO_BF=""; NO_NF=""
for s in $SEEDS; do
    [ -e "$BF$s" ] || NO_BF="$NO_BF $s"
    [ -e "$NF$s" ] || NO_NF="$NO_NF $s"
    if [ -e "$BF$s" ] && [ -e "$NF$s" ]; then BOTH="$BOTH $s"; fi
done
if [ -z "$BOTH" ]; then
    echo "error: no seed of $SEEDS has both runs under $(pwd)/$FOLDER: BF-Net's ${BF}<N> lacks seed(s)${NO_BF:- none}," \
         "the ablation's ${NF}<N> lacks seed(s)${NO_NF:- none}; train them first from this folder" \
         "(DATASET=$DATASET SEEDS=\"$SEEDS\" sh train.sh; DATASET=$DATASET SEEDS=\"$SEEDS\" FUSION=none sh train.sh)" >&2
    exit 2
fi
[ -z "$NO_BF$NO_NF" ] || echo "note: left out: seed(s)${NO_BF:- none} without BF-Net's run ${BF}<N>, seed(s)${NO_NF:- none}" \
    "without the ablation's ${NF}<N>; comparing seed(s)$BOTH" >&2
# Both tests are written to a fresh folder first and replace the earlier ablation's only when both
# succeeded: the two folders always hold the same seeds.
NEW=./$FOLDER/.ablation_in_progress
rm -rf "$NEW"
"$PYTHON" "$HERE/test.py" --dataset=$DATASET --job_name=$ACTIVATION --seeds $BOTH --data-root="$DATA_ROOT" \
    --output "$NEW/Final_pre_bfnet" $EXTRA_ARGS
"$PYTHON" "$HERE/test.py" --dataset=$DATASET --job_name=${ACTIVATION}_nofusion --seeds $BOTH --data-root="$DATA_ROOT" \
    --output "$NEW/Final_pre_nofusion" $EXTRA_ARGS
rm -rf ./$FOLDER/Final_pre_bfnet ./$FOLDER/Final_pre_nofusion
mv "$NEW/Final_pre_bfnet" "$NEW/Final_pre_nofusion" ./$FOLDER/
rmdir "$NEW"
echo "seed(s)$BOTH: the tests are in ./$FOLDER/Final_pre_bfnet and ./$FOLDER/Final_pre_nofusion (an earlier ablation's replaced)" >&2
PYTHONSAFEPATH=1 "$PYTHON" -m scripts.compare ./$FOLDER/Final_pre_bfnet/summary.json ./$FOLDER/Final_pre_nofusion/summary.json \
    --names BF-Net "no fusion (ablation)"
