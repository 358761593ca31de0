#!/usr/bin/env bash
# The prepared CUDA proof: attnbench doctor (every backend vs the float64 reference, flex compiled
# through Triton) and the kernels suite through the harness's workers, each step time-boxed and writing
# as it goes, so whatever finished comes back under $OUT. Needs only torch on the machine: pydantic and
# the other pure-Python dependencies come from a carried .whl/ folder (docs/backends.md).
set -u
export PYTHONUNBUFFERED=1
DEV=${DEV:-cuda}
OUT=${OUT:-/tmp/gpu-proof}
mkdir -p "$OUT"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/log.txt"; }
if [ -d .whl ] && [ "${SKIP_WHL:-0}" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 1
else
  export PYTHONPATH=$PWD
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null; python3 -c "import torch; print(torch.__version__, torch.version.cuda)"; } > "$OUT/machine.txt"
# 1. doctor, every backend but flex, float32 + bfloat16, forward + train (needs torch, numpy, rich only)
log "doctor (no flex)"
timeout ${T_DOCTOR:-40} python3 -m attnbench doctor --device "$DEV" --dtype float32 bfloat16 \
  --backend native masked math im2col xformers > "$OUT/doctor.txt" 2>&1; log "doctor rc=$?"
# 2. the kernels suite (Swin-T stages), batch 8, through the harness's workers
python3 - <<'PY'
import yaml
s = yaml.safe_load(open("suites/kernels.yaml"))
s.update(name="kernels", batch_size=8, cases_per_worker=64)
s["timing"] = {**s.get("timing", {}), "min_run_time": 0.1}
s["flops"] = {"fvcore": False}
yaml.safe_dump(s, open("/tmp/kernels-gpu.yaml", "w"), sort_keys=False)
PY
log "kernels suite"
timeout ${T_KERNELS:-55} python3 -m attnbench run /tmp/kernels-gpu.yaml --device "$DEV" --out "$OUT/results" > "$OUT/kernels.txt" 2>&1
log "kernels rc=$?"
# 3. doctor, flex compiled through Triton, forward + backward (mode train runs both), bf16
log "doctor flex"
timeout ${T_FLEX:-45} python3 -m attnbench doctor --device "$DEV" --dtype bfloat16 --mode train --backend flex \
  --mechanism swin axial > "$OUT/doctor-flex.txt" 2>&1; log "doctor flex rc=$?"
tar czf "$OUT/results.tar.gz" -C "$OUT" results 2>/dev/null && rm -rf "$OUT/results"
log "done"
