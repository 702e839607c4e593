#!/usr/bin/env bash
# JSRT noisy-label benchmark on one GPU, every trainer in its own process at the same time (see docs/benchmarks.md).
# Usage: examples/jsrt/run_parallel_gpu.sh /path/to/JSRT WORKDIR EPOCHS [ITERATIONS_PER_EPOCH] [--only-2d]
# 256 x 256 images, nnU-Net's own 2d plan (full-width U-Net, batch 9) and a full-width 2d_coplenet (C = 32); every
# trainer gets EPOCHS x ITERATIONS (default 250) steps, 10 validation iterations per epoch, seed 0, default
# hyper-parameters. The runs share one results folder; their test-set runs are then collected into one benchmark
# folder (bench_noisy), which the plugin's `nnunet-ext benchmark` resumes to write the paired report.
# Environment: DEVICE (default cuda), nnUNet_n_proc_DA (default 3 per process), SIZE (default 256: as stored).
set -euo pipefail
JSRT=$1
WORK=$(realpath -m "$2")
EPOCHS=$3
ITERS=${4:-250}
ONLY2D=${5:-}
DEVICE=${DEVICE:-cuda}
HERE=$(cd "$(dirname "$0")" && pwd)
export nnUNet_raw=$WORK/raw nnUNet_preprocessed=$WORK/preprocessed nnUNet_results=$WORK/results
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-3}
mkdir -p "$WORK"

[ -f "$nnUNet_raw/Dataset801_JSRTLungNoisy/dataset.json" ] ||
  python "$HERE/convert_jsrt.py" "$JSRT" --structure lung --noisy-id 801 --clean-id 802 --size "${SIZE:-256}"
[ -f "$nnUNet_preprocessed/Dataset802_JSRTLungClean/nnUNetPlans.json" ] ||
  env -u nnUNet_n_proc_DA nnUNetv2_plan_and_preprocess -d 801 802 -c 2d -np "$(nproc)"  # its planner fails on 0
nnunet-ext add-config -d 801 --base 2d --arch coplenet --name 2d_coplenet --overwrite > /dev/null

B=$WORK/bench_e${EPOCHS}
FLAGS=(--epochs "$EPOCHS" --iterations-per-epoch "$ITERS" --val-iterations-per-epoch 10 --skip-final-validation
       -device "$DEVICE" --seed 0 --no-progress --results-dir "$B/models")
one() {  # NAME DATASET CONFIGURATION TRAINER: one trainer as its own benchmark (it is its own baseline)
  local start=$SECONDS
  nnunet-ext benchmark -o "$B/p_$1" -d "$2" -c "$3" --baseline "$4" -tr "$4" "${FLAGS[@]}" > "$B/$1.log" 2>&1
  echo "$1: $4 on $3, done in $((SECONDS - start)) s"
}
mkdir -p "$B"
RUNS=(oracle base nr mt)
one oracle 802 2d nnUNetTrainer & one base 801 2d nnUNetTrainer &
one nr 801 2d NRDiceTrainer & one mt 801 2d NRDiceAdaptiveMTTrainer &
CONFIGS=(2d)
if [ "$ONLY2D" != "--only-2d" ]; then
  RUNS+=(cbase cnr cmt); CONFIGS+=(2d_coplenet)
  one cbase 801 2d_coplenet nnUNetTrainer & one cnr 801 2d_coplenet NRDiceTrainer &
  one cmt 801 2d_coplenet NRDiceAdaptiveMTTrainer &
fi
wait
mkdir -p "$B/bench_noisy/runs"
for n in "${RUNS[@]}"; do
  [ "$n" = oracle ] || cp -r "$B/p_$n/runs/." "$B/bench_noisy/runs/"
done
nnunet-ext benchmark -o "$B/bench_noisy" -d 801 -c "${CONFIGS[@]}" -tr NRDiceTrainer NRDiceAdaptiveMTTrainer \
  "${FLAGS[@]}" > "$B/combine.log" 2>&1
python "$HERE/report_jsrt.py" --noisy "$B/bench_noisy" --oracle "$B/p_oracle" --baseline nnUNetTrainer:2d \
  --oracle-run nnUNetTrainer:2d -o "$B/jsrt_table.md"
