#!/usr/bin/env bash
# Budget study (issue 13): when does stock nnU-Net memorise label noise, and what do the plugin trainers do about it.
#
#   bash examples/jsrt/budget_sweep.sh /path/to/JSRT WORK_DIR
#
# JSRT lung at 64 px (the 2d_cpu configuration, CPU budgets), three label settings:
#   j3        J3 noise (random dilation or erosion, 7-9 px at 256 px, seed 0) on the training labels, clean
#             (trusted) validation cases: nnU-Net's checkpoint_best is chosen on clean labels;
#   j3_nv     the same noise on the validation labels too: the setting of a user without trusted cases;
#   j1        the published J1 masks (biased outward drift), clean validation cases;
# and the clean-label oracle. Every cell is trained once and predicted with checkpoint_final and checkpoint_best;
# test Dice is always against the 75 clean test masks. Budgets: steps = epochs x 20 iterations (1k, 3k, 8k); the
# 8k rows run with 2 seeds. Layout: WORK/<setting>_<steps>/{final,best}/ (benchmark outputs of the two
# checkpoints) sharing WORK/<setting>_<steps>/nnUNet_results (one trained model per cell). Everything is resumable: rerun the same command after an interruption.
# Environment overrides: TRAINERS, BUDGETS ("1000 3000 8000"), LONG_SEEDS ("0 1"), SETTINGS ("j3 j3_nv j1"),
# DEVICE (cpu), EXTRA (extra benchmark flags). At the end it writes WORK_DIR/budget_report.md and figures
# (examples/jsrt/report_budget.py). On 2 CPU cores an 8k-step run takes ~50 min; a full sweep takes days on CPU:
# use a GPU (DEVICE=cuda, all budgets in hours) or restrict TRAINERS / SETTINGS / BUDGETS.
set -euo pipefail
JSRT=${1:?usage: budget_sweep.sh JSRT_DIR WORK_DIR}
WORK=${2:?usage: budget_sweep.sh JSRT_DIR WORK_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
TRAINERS=${TRAINERS:-"nnUNetTrainer NRDiceTrainer NRDiceAdaptiveMTTrainer EarlyLearningTrainer NRDiceAdaptiveMTEarlyLearningTrainer"}
BUDGETS=${BUDGETS:-"1000 3000 8000"}
LONG_SEEDS=${LONG_SEEDS:-"0 1"}
SETTINGS=${SETTINGS:-"j3 j3_nv j1"}
DEVICE=${DEVICE:-cpu}
ITERS=20
mkdir -p "$WORK"
export nnUNet_raw=$WORK/raw nnUNet_preprocessed=$WORK/preprocessed nnUNet_results=$WORK/results
export nnUNet_compile=${nnUNet_compile:-f}

# dataset ids: 831/832 j3 + oracle, 833 j3 with noisy validation, 835/836 j1 + oracle
declare -A DATASET=([j3]=831 [j3_nv]=833 [j1]=835)
declare -A ORACLE=([j3]=832 [j3_nv]=832 [j1]=836)
convert() { # id clean_id flags...
  local id=$1 clean=$2; shift 2
  ls -d "$nnUNet_raw"/Dataset"$id"_* >/dev/null 2>&1 ||
    python "$HERE/convert_jsrt.py" "$JSRT" --structure lung --noisy-id "$id" --clean-id "$clean" --size 64 "$@" \
      > "$WORK/convert_$id.json"
}
convert 831 832 --noise j3 --seed 0
convert 833 834 --noise j3 --seed 0 --noisy-validation
convert 835 836 --noise j1
for id in 831 832 833 835 836; do
  if [ ! -f "$nnUNet_preprocessed/$(ls "$nnUNet_raw" | grep "^Dataset${id}_")/nnUNetPlans.json" ]; then
    nnUNetv2_plan_and_preprocess -d "$id" -c 2d -np 1 > "$WORK/preprocess_$id.log" 2>&1
    python "$HERE/add_cpu_config.py" -d "$id" --divisor 2
  fi
done

bench() { # out dataset steps seeds trainers...
  local out=$1 dataset=$2 steps=$3 seeds=$4; shift 4
  local epochs=$((steps / ITERS))
  for checkpoint in final best; do
    # shellcheck disable=SC2086
    nnunet-ext benchmark -o "$out/$checkpoint" -d "$dataset" -c 2d_cpu -tr "$@" --epochs "$epochs" \
      --iterations-per-epoch "$ITERS" --val-iterations-per-epoch 5 --skip-final-validation --seeds $seeds \
      --checkpoint "$checkpoint" -device "$DEVICE" --results-dir "$out/nnUNet_results" --no-progress ${EXTRA:-}
  done
}
for steps in $BUDGETS; do
  seeds=0
  [ "$steps" -ge 8000 ] && seeds=$LONG_SEEDS
  for setting in $SETTINGS; do
    # shellcheck disable=SC2086
    bench "$WORK/${setting}_${steps}" "${DATASET[$setting]}" "$steps" "$seeds" $TRAINERS
  done
  for setting in $SETTINGS; do
    oracle=${ORACLE[$setting]}
    bench "$WORK/oracle${oracle}_${steps}" "$oracle" "$steps" 0 nnUNetTrainer
  done
done
python "$HERE/report_budget.py" "$WORK" -o "$WORK/budget_report.md"
