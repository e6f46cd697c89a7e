#!/usr/bin/env bash
# One prepared GPU session (issue 29's order): the `gpu` tests, the throughput benchmark, time to accuracy with one
# seed. Run from the project root on the GPU machine, with the kit beside it (../shared/gpu/smoke.sh's header says
# how to make .gpu-kit/: its wheels and the data):
#   bash benchmarks/gpu_session.sh [STAGE ...]     STAGE: tests throughput tta93 tta94 (the default, in this order),
#                                                  compiled (throughput with torch.compile and CUDA graphs),
#                                                  seeds (issue 31: 3 seeds of best_gpu.yaml and efficientnet_gpu.yaml
#                                                  at once within SEEDS_BUDGET_S, tested, published into $OUT/seeds)
# Each stage has its own time limit (seconds; env TESTS_S, THROUGHPUT_S, TTA_S, TTA94_S, SEEDS_S) so that one slow stage leaves the
# others their time. The benchmarks write benchmarks/results/*_cuda-*.json as they do anywhere; those files and each
# stage's log are copied to $OUT (default a temporary folder), which the device tool brings back.
set -u
KIT=${KIT:-.gpu-kit}; T=$(mktemp -d); OUT=${OUT:-$T}; DATA=${DATA:-$KIT/data}
export PYTHONUNBUFFERED=1 XDG_CACHE_HOME=$T/cache PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
export FMNIST_DATA_DIR=$DATA
if ! python3 -c "import jsonargparse" 2>/dev/null; then  # the GPU image has torch and lightning, not jsonargparse
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$T/site" "$KIT"/wheels/*.whl || exit 1
  export PYTHONPATH=$PYTHONPATH:$T/site
fi
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA GPU')"
stages=("$@"); [ ${#stages[@]} -gt 0 ] || stages=(tests throughput tta93 tta94)
for stage in "${stages[@]}"; do
  start=$(date +%s)
  case $stage in
    tests) timeout "${TESTS_S:-240}" python3 -m pytest tests/test_gpu.py -m gpu -q -p no:cacheprovider ;;
    throughput) timeout "${THROUGHPUT_S:-300}" python3 benchmarks/gpu_throughput.py --data-dir "$DATA" \
        --epochs 2 --repeats 1 --images 30000 ;;
    compiled) timeout "${THROUGHPUT_S:-300}" python3 benchmarks/gpu_throughput.py --data-dir "$DATA" \
        --epochs 2 --repeats 1 --images 30000 --set speed.compile=true \
        --set speed.compile_mode=reduce-overhead --out "$OUT/gpu_throughput_compiled.json" ;;
    tta93) timeout "${TTA_S:-120}" python3 benchmarks/time_to_accuracy.py --config configs/fast93.yaml \
        --overlay configs/gpu_bf16.yaml --target 0.93 --ckpt last --seeds 1 --data-dir "$DATA" \
        --logs "$T/tta93" ;;
    tta94) timeout "${TTA94_S:-300}" python3 benchmarks/time_to_accuracy.py --config configs/best.yaml \
        --overlay configs/gpu_bf16.yaml --target 0.94 --ckpt best --seeds 1 --data-dir "$DATA" \
        --logs "$T/tta94" ;;
    seeds) timeout "${SEEDS_S:-560}" python3 scripts/gpu/train_seeds.py --recipe best=configs/best_gpu.yaml \
        --recipe efficientnet=configs/efficientnet_gpu.yaml --overlay configs/gpu_bf16.yaml --seeds 1 2 3 \
        --budget-s "${SEEDS_BUDGET_S:-480}" --data-dir "$DATA" --out "$OUT/seeds" --work "$T/train_seeds" ;;
    *) echo "unknown stage $stage (tests throughput tta93 tta94 compiled seeds)"; exit 2 ;;
  esac > "$OUT/$stage.log" 2>&1
  echo "== $stage exit $?, $(( $(date +%s) - start )) s"; tail -25 "$OUT/$stage.log"
  cp benchmarks/results/*_cuda-*.json "$OUT"/ 2>/dev/null
done
