#!/usr/bin/env bash
# Every GPU row of the speed benchmarks, for one lent GPU machine (tried on a CPU first with
# CPU=1, on a small subset). Pack the data and wheels first, from the project root:
#     ../shared/tools/gpu-pack cifar10 && pip wheel airbench --no-deps -w .gpu/whl
# then run (carry .gpu):  source .gpu/env.sh && bash scripts/benchmarks/gpu.sh [loop|recipe|all]
# Tables go to stdout and, as Markdown files, to $OUT (or /tmp).
set -euo pipefail
part=${1:-all}
data=${DATA:-.gpu/data/cifar10}
out=${OUT:-/tmp}
if [ "${CPU:-0}" = 1 ]; then  # a quick try of the same commands on a CPU subset
    device=cpu
    loop=(--train-images 1024 --eval-images 256 --epochs 1 --repeats 1)
    recipe=(--c-train-images 1024 --c-eval-images 256 --c-epochs 1 --seeds 0 --compile-modes "")
else
    device=cuda
    loop=(--train-images 50000 --eval-images 10000 --epochs 10 --repeats 1)
    recipe=(--seeds 0,1 --compile-modes default,reduce-overhead)
fi
if [ "$part" = loop ] || [ "$part" = all ]; then
    python3 scripts/benchmarks/loop_overhead.py --data "$data" --device "$device" --model resnet18_cifar \
        "${loop[@]}" | tee "$out/loop_overhead_gpu.md"
fi
if [ "$part" = recipe ] || [ "$part" = all ]; then
    python3 scripts/benchmarks/cifar10.py --data "$data" --device "$device" --full --parts "" \
        "${recipe[@]}" | tee "$out/cifar10_c.md"
fi
