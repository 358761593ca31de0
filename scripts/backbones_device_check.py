"""Device check for mechanisms.backbones (issue 13), run on a CUDA machine that has timm.

1. Against timm (an independent port of the authors' Swin-T and DeiT-S): timm's own params and
   FlopCounterMode MACs at 224², and our model loaded with timm's weights must give timm's logits
   (float64, CPU).
2. The papers' throughput protocol on the GPU: batch 64, fp32 without AMP, eval + no_grad, 50 warm-up
   then 30 timed forwards (Swin's main.py `throughput`), repeated 3 times; peak memory of the timed
   forwards. Then detection scale, 800x1216 bf16, batch 1, same protocol.

Writes CSV/JSON to $OUT (or ./device-out). Not part of the test suite: it needs timm and a GPU.
"""
from __future__ import annotations

import csv
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mechanisms import backbones  # noqa: E402
from mechanisms.backbones.counting import counted_macs  # noqa: E402
from mechanisms.slide import SlideAttention  # noqa: E402

OUT = Path(os.environ.get("OUT", "device-out"))
OUT.mkdir(parents=True, exist_ok=True)


def log(*args):
    print(*args, flush=True)


def timm_key(key: str) -> str:
    """timm's Swin/ViT parameter name -> ours."""
    key = key.replace("patch_embed.", "stem.").replace("head.fc.", "head.")
    m = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
    if m:  # timm >= 0.9 merges at the start of stages 1-3, older timm at the end of stages 0-2
        return f"merges.{int(m.group(1)) - MERGE_OFFSET}.{m.group(2)}"
    return re.sub(r"layers\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2.", key)


MERGE_OFFSET = 1
DEVICE = os.environ.get("CHECK_DEVICE", "cuda")  # "cpu": a quick smoke run of this script, tiny sizes
SMOKE = DEVICE == "cpu"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timm_check() -> dict:
    global MERGE_OFFSET
    import timm

    rows = {}
    for ours, theirs in [("swin-t", "swin_tiny_patch4_window7_224"), ("deit-s", "deit_small_patch16_224")]:
        torch.manual_seed(0)
        ref = timm.create_model(theirs, pretrained=False).eval().double()
        model = backbones.build(ours).eval().double()
        MERGE_OFFSET = 0 if "layers.0.downsample.reduction.weight" in ref.state_dict() else 1
        state = {timm_key(k): v for k, v in ref.state_dict().items()}
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        extra = sorted(k for k in set(state) - set(own) if not k.endswith(("relative_position_index", "attn_mask")))
        model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
        x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
        with torch.no_grad():
            diff = (model(x) - ref(x)).abs().max().item()
        ref32 = timm.create_model(theirs, pretrained=False).eval()
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as c, torch.no_grad():
                ref32(torch.randn(1, 3, 224, 224))
        rows[ours] = {
            "timm_model": theirs, "timm_version": timm.__version__,
            "timm_params": sum(p.numel() for p in ref.parameters()),
            "ours_params": backbones.count_params(model),
            "timm_macs_flop_counter": c.get_total_flops() // 2,
            "ours_macs_analytic": model.flops(224, 224)["total"],
            "ours_macs_flop_counter": counted_macs(backbones.build(ours).eval(), 224, 224),
            "missing_in_timm": missing, "timm_only": extra,
            "max_abs_logit_diff_float64": diff,
        }
        log(ours, rows[ours])
    return rows


def protocol(model, x, warmup=50, iters=30, repeats=3) -> dict:
    if SMOKE:
        warmup, iters, repeats = 1, 1, 2
    with torch.no_grad():
        for _ in range(warmup):
            model(x)
        sync()
        if DEVICE == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(iters):
                model(x)
            sync()
            times.append((time.perf_counter() - t0) / iters)
    B = x.shape[0]
    return {
        "latency_ms": statistics.median(times) * 1e3,
        "latency_min_ms": min(times) * 1e3, "latency_max_ms": max(times) * 1e3,
        "throughput_img_s": B / statistics.median(times),
        "throughput_first_img_s": B / times[0],
        "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if DEVICE == "cuda" else None,
    }


def consistency() -> list[dict]:
    """Logits of each model on the device (fp32, TF32 off as by default) against a float64 CPU copy."""
    rows = []
    for name in backbones.available():
        torch.manual_seed(0)
        model = backbones.build(name).eval()
        x = torch.randn(4, 3, 224, 224)
        with torch.no_grad():
            ref = model.double()(x.double())
            out = model.float().to(DEVICE)(x.to(DEVICE)).double().cpu()
        err = (out - ref).norm().item() / ref.norm().item()
        rows.append({"model": name, "device": DEVICE, "rel_l2_vs_float64": err, "max_abs": (out - ref).abs().max().item()})
        log(rows[-1])
    return rows


ONLY = [s for s in os.environ.get("CHECK_ONLY", "").split(",") if s]


def configs():
    for name in backbones.available():
        yield name, name, None, False
    yield "slide-swin-t (deploy)", "slide-swin-t", None, True
    for mech in ["pale", "cswin", "slide", "axial", "global"]:
        yield f"swin-t/{mech}", "swin-t", mech, False


def speed() -> list[dict]:
    rows = []
    cases = [(224, 224, 64, torch.float32), (800, 1216, 1, torch.bfloat16)]
    if SMOKE:
        cases = [(64, 64, 2, torch.float32), (64, 96, 1, torch.bfloat16)]
    for label, name, attention, deploy in configs():
        if ONLY and label not in ONLY:
            continue
        torch.manual_seed(0)
        model = backbones.build(name, attention=attention).eval()
        if deploy:
            for a in model.attention_modules():
                if isinstance(a, SlideAttention):
                    a.reparameterize()
        params = backbones.count_params(model)
        for H, W, B, dtype in cases:
            m = model.to(DEVICE, dtype)
            x = torch.randn(B, 3, H, W, device=DEVICE, dtype=dtype)
            row = {"label": label, "model": name, "attention": attention or "", "height": H, "width": W,
                   "batch_size": B, "dtype": str(dtype).removeprefix("torch."), "params": params,
                   "macs_per_image": model.flops(H, W)["total"]}
            try:
                row.update(protocol(m, x))
                row["status"] = "ok"
            except torch.OutOfMemoryError as exc:  # noqa: PERF203
                row["status"] = f"oom: {str(exc).splitlines()[0]}"
            except Exception as exc:  # one row per case, whatever happens
                row["status"] = f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            log(row)
            rows.append(row)
            del x
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
        del model
    return rows


def main() -> None:
    env = {
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu",
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "python": sys.version.split()[0], "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    log(env)
    (OUT / "env.json").write_text(json.dumps(env, indent=1))
    if os.environ.get("CHECK_TIMM", "1") == "1":
        try:
            check = timm_check()
        except Exception as exc:
            check = {"error": f"{type(exc).__name__}: {exc}"}
            log("timm check failed:", check)
        (OUT / "timm_check.json").write_text(json.dumps(check, indent=1, default=str))
    if os.environ.get("CHECK_CONSISTENCY", "0") == "1":
        (OUT / "consistency.json").write_text(json.dumps(consistency(), indent=1))
    rows = speed()
    name = "backbones_h200" + ("_" + "_".join(re.sub(r"[^A-Za-z0-9]+", "-", o) for o in ONLY) if ONLY else "")
    with open(OUT / f"{name}.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
