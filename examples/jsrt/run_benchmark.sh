#!/usr/bin/env bash
# JSRT noisy-label benchmark (see README.md here and docs/benchmarks.md).
# Usage: examples/jsrt/run_benchmark.sh /path/to/JSRT WORKDIR [EPOCHS] [ITERATIONS_PER_EPOCH] [SIZE] [DIVISOR] [EMA_LATE]
# Defaults are the documented CPU budget: 64 x 64 images, half-width networks, 50 epochs x 20 iterations, and the
# teacher's late EMA decay scaled to that budget (0.99: a ~100-step horizon; the default 0.999 averages ~1000 steps,
# the whole 1000-step run). For nnU-Net's default budget pass 1000 250 256 1 0.999.
set -euo pipefail
JSRT=$1
WORK=$(realpath -m "$2")
EPOCHS=${3:-50}
ITERS=${4:-20}
SIZE=${5:-64}
DIVISOR=${6:-2}
EMA_LATE=${7:-0.99}
HERE=$(cd "$(dirname "$0")" && pwd)
export nnUNet_raw=$WORK/raw nnUNet_preprocessed=$WORK/preprocessed nnUNet_results=$WORK/results
mkdir -p "$WORK"

[ -f "$nnUNet_raw/Dataset801_JSRTLungNoisy/dataset.json" ] ||
  python "$HERE/convert_jsrt.py" "$JSRT" --structure lung --noisy-id 801 --clean-id 802 --size "$SIZE"
[ -f "$nnUNet_preprocessed/Dataset802_JSRTLungClean/nnUNetPlans.json" ] ||
  nnUNetv2_plan_and_preprocess -d 801 802 -c 2d -np 2
python "$HERE/add_cpu_config.py" -d 801 802 --divisor "$DIVISOR"
C=$((32 / DIVISOR))
nnunet-ext add-config -d 801 --base 2d --arch coplenet --name 2d_coplenet --overwrite \
  --arch-kwargs "{\"features_per_stage\": [$C, $((2 * C)), $((4 * C)), $((8 * C)), $((16 * C))]}"

BUDGET=(--epochs "$EPOCHS" --iterations-per-epoch "$ITERS" --val-iterations-per-epoch 5 --skip-final-validation
        --seed 0 --no-progress)
nnunet-ext benchmark -o "$WORK/bench_noisy" -d 801 -c 2d_cpu 2d_coplenet \
  -tr NRDiceTrainer NRDiceAdaptiveMTTrainer "${BUDGET[@]}" \
  --trainer-override NRDiceAdaptiveMTTrainer="{\"mean_teacher\": {\"ema_late\": $EMA_LATE}}"
nnunet-ext benchmark -o "$WORK/bench_oracle" -d 802 -c 2d_cpu -tr nnUNetTrainer "${BUDGET[@]}"
python "$HERE/report_jsrt.py" --noisy "$WORK/bench_noisy" --oracle "$WORK/bench_oracle" -o "$WORK/jsrt_table.md"
