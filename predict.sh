#!/bin/sh
# Segment your own fundus photographs (see `python predict.py --help`).
#
#   WEIGHTS=DRIVE_AV/sigmoid_seed42 INPUT=photos OUTPUT=predictions sh predict.sh
#   INPUT=photos sh predict.sh                               # the shipped bundle in pretrained/
#   WEIGHTS="DRIVE_AV/sigmoid_seed42 DRIVE_AV/sigmoid_seed40" INPUT=photos sh predict.sh   # ensemble
#   WEIGHTS=bfnet_drive.index.json INPUT="scans/*.jpg" MASKS=scans/masks sh predict.sh --tta
#   NPROC=2 WEIGHTS=... INPUT=... sh predict.sh             # two processes (GPUs, else CPU) via torchrun
#
# WEIGHTS: run folder(s), bundle file(s) or index JSON(s), space separated (default: the shipped bundle).
# INPUT: a folder (recursive), a quoted glob, a list file or an image. Extra arguments go to predict.py.
# OUTPUT: the output folder (default ./predictions); MASKS: a folder of FOV masks; NPROC: processes
# (default 1); PYTHON: the interpreter (default: the checkout's .venv, else python3).
set -eu
case "${1:-}" in -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; echo; PRINT_HELP=1 ;; esac
WEIGHTS=${WEIGHTS:-}
if [ -n "${PRINT_HELP:-}" ]; then INPUT=${INPUT:-}; else
    INPUT=${INPUT:?set INPUT to a folder, a glob, a list file or an image}; fi
OUTPUT=${OUTPUT:-./predictions}
NPROC=${NPROC:-1}
# The checkout (this script's folder, through a link too): its .py files and .venv. Data, runs
# and outputs are relative to the current folder, as with python train.py.
HERE=$(dirname "$(readlink -f "$0" 2>/dev/null || echo "$0")")
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$HERE/.venv/bin/python" ]; then PYTHON="$HERE/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"   # python -m scripts.* from any folder
set -- ${WEIGHTS:+--weights $WEIGHTS} --input "$INPUT" --output "$OUTPUT" ${MASKS:+--masks "$MASKS"} "$@"
if [ "$NPROC" -gt 1 ]; then
    exec "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" "$HERE/predict.py" "$@"
fi
exec "$PYTHON" "$HERE/predict.py" "$@"
