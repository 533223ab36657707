#!/usr/bin/env bash
# The whole GPU check as one command, for a CUDA node that has torch but no network:
# install the wheels carried in .whl/ (made by tools/offline_wheels.py) where there are
# some, run the GPU tests, then the GPT-2 124M benchmark (tools/gpu_check.py). About 5
# minutes on one H100/H200. Logs, the device's description and gpu-check.json go to
# $OUT (default: gpu-out/); the last lines printed are the summary.
#
#   python tools/offline_wheels.py .whl --python-version 3.12   # beforehand, with network
#   bash tools/gpu_run.sh                                       # on the node, repo root
set -uo pipefail
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/llm_gym-site .whl/*.whl \
        || { echo "installing the carried wheels failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/llm_gym-site${PYTHONPATH:+:$PYTHONPATH}
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 -c "import sys, torch; print('python', sys.version.split()[0], '| torch',
        torch.__version__, '| cuda', torch.version.cuda)"
} 2>&1 | tee "$out/device.txt"
timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu 2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}
timeout 420 python3 tools/gpu_check.py --out "$out/gpu-check.json" 2>&1 | tee "$out/check.log"
check=${PIPESTATUS[0]}
echo "summary: GPU tests exit $tests ($(tail -n 1 "$out/tests.log")); gpu_check exit $check"
[ "$tests" -eq 0 ] && [ "$check" -eq 0 ]
