#!/bin/sh
# BF-Net against the same GAN training without the binary branches (--fusion none), pixel and
# segment metrics side by side. Train both first:
#   sh train.sh                  # ./$DATASET/${ACTIVATION}_seed<N>
#   FUSION=none sh train.sh      # ./$DATASET/${ACTIVATION}_nofusion_seed<N>
# Only the seeds trained for both are compared (the others are named). Writes both tests to
# ./<Dataset>/Final_pre_<variant>_bfnet and ./<Dataset>/Final_pre_<variant>_nofusion, its own
# folders, replacing an earlier ablation's once both succeeded; prints the comparison
# (python -m scripts.compare).
# Variables: DATASET, ACTIVATION (sigmoid, softmax), SEEDS (spaces between), DATA_ROOT, PYTHON;
# EXTRA_ARGS: more test.py options for both tests (e.g. --amp; not --output).
case "${1:-}" in
    "") [ $# -le 1 ] || { echo "error: ablation.sh takes no arguments; sh ablation.sh --help lists its variables" >&2; exit 2; } ;;
    -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "error: ablation.sh takes no arguments ($1): set its variables instead, e.g. DATASET=LES-AV sh ablation.sh;" \
            "sh ablation.sh --help lists them" >&2; exit 2 ;;
esac
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
OUT_BF=./$FOLDER/Final_pre_${ACTIVATION}_bfnet; OUT_NF=./$FOLDER/Final_pre_${ACTIVATION}_nofusion  # this script's own
case " $EXTRA_ARGS " in *" --output "*|*" --output="*)
    echo "error: EXTRA_ARGS: no --output: ablation.sh writes its two tests to $OUT_BF and $OUT_NF itself" >&2
    exit 2 ;; esac
case " $EXTRA_ARGS " in *" --output-root"*)
    echo "error: EXTRA_ARGS: no --output-root: ablation.sh reads the runs in ./$FOLDER: run it from the folder" \
         "that holds $FOLDER/" >&2; exit 2 ;; esac
BF=./$FOLDER/${ACTIVATION}_seed; NF=./$FOLDER/${ACTIVATION}_nofusion_seed   # + <N>: the runs of train.sh
BOTH=""; NO_BF=""; NO_NF=""
for s in $SEEDS; do
    [ -e "$BF$s" ] || NO_BF="$NO_BF $s"
    [ -e "$NF$s" ] || NO_NF="$NO_NF $s"
    if [ -e "$BF$s" ] && [ -e "$NF$s" ]; then BOTH="$BOTH $s"; fi
done
if [ -z "$BOTH" ]; then
    TRAIN="DATASET=$DATASET ACTIVATION=$ACTIVATION SEEDS=\"$SEEDS\""
    echo "error: no seed of $SEEDS has both runs under $(pwd)/$FOLDER: BF-Net's ${BF}<N> lacks seed(s)${NO_BF:- none}," \
         "the ablation's ${NF}<N> lacks seed(s)${NO_NF:- none}; train them first from this folder" \
         "($TRAIN sh $HERE/train.sh; $TRAIN FUSION=none sh $HERE/train.sh)" >&2
    exit 2
fi
[ -z "$NO_BF$NO_NF" ] || echo "note: left out: seed(s)${NO_BF:- none} without BF-Net's run ${BF}<N>, seed(s)${NO_NF:- none}" \
    "without the ablation's ${NF}<N>; comparing seed(s)$BOTH" >&2
# Both tests go to a fresh folder first and replace the earlier ablation's (of this variant) only
# when both succeeded: the two folders always hold the same seeds. A failed test leaves the
# earlier ones as they were, and its partial output is removed.
NEW=$(mktemp -d "./$FOLDER/.ablation.XXXXXX")
trap 'rm -rf "$NEW"' EXIT
# Each test runs in the background, ignoring SIGINT, while this script waits: a Ctrl-C or SIGTERM
# to the script is passed on once (as SIGTERM), the partial output removed, and the script ends by
# that signal, the earlier ablation untouched.
child=""; stopped_by=""
stop() { stopped_by=${stopped_by:-$1}; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null || true; }
trap 'stop INT' INT
trap 'stop TERM' TERM
run_test() {  # test.py's arguments: its exit status
    (trap '' INT; exec "$PYTHON" "$HERE/test.py" "$@") & child=$!
    [ -z "$stopped_by" ] || stop "$stopped_by"
    status=0; wait "$child" || status=$?
    while kill -0 "$child" 2>/dev/null; do status=0; wait "$child" || status=$?; done
    child=""
    if [ -n "$stopped_by" ]; then rm -rf "$NEW"; trap - INT TERM EXIT; kill -s "$stopped_by" $$; fi
    return $status
}
run_test --dataset=$DATASET --job_name=$ACTIVATION --seeds $BOTH --data-root="$DATA_ROOT" \
    --output "$NEW/bfnet" $EXTRA_ARGS
run_test --dataset=$DATASET --job_name=${ACTIVATION}_nofusion --seeds $BOTH --data-root="$DATA_ROOT" \
    --output "$NEW/nofusion" $EXTRA_ARGS
REPLACED=""; if [ -e "$OUT_BF" ] || [ -e "$OUT_NF" ]; then REPLACED=" (the earlier ablation's replaced)"; fi
rm -rf "$OUT_BF" "$OUT_NF"
mv "$NEW/bfnet" "$OUT_BF"
mv "$NEW/nofusion" "$OUT_NF"
echo "seed(s)$BOTH: the tests are in $OUT_BF and $OUT_NF$REPLACED" >&2
if [ -n "$stopped_by" ]; then trap - INT TERM; kill -s "$stopped_by" $$; fi  # a stop while they moved in
PYTHONSAFEPATH=1 "$PYTHON" -m scripts.compare "$OUT_BF/summary.json" "$OUT_NF/summary.json" \
    --names BF-Net "no fusion (ablation)"
