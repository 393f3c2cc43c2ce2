"""PyTorch FlashAttention-2 (SDPA flash backend) on the grid of
flash_sm80_driver --bench, timed the same way (3 warm-ups, median of 20
event-timed runs), printed beside the driver's JSON lines.

    python3 fa2_torch_bench.py --ours ours.jsonl [--json fa2.jsonl]
FLOPs = 4 * B * L^2 * H * D, halved when causal.
"""
import argparse
import json

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import torch.nn.functional as F


def time_fa2(dtype, d, L, causal):
    H, B = 2048 // d, 16384 // L
    # (B, L, H, D) storage viewed as (B, H, L, D): FlashAttention's own layout.
    q, k, v = (torch.randn(B, L, H, d, device="cuda", dtype=dtype).transpose(1, 2) for _ in range(3))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        for _ in range(3):
            F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        times = []
        for _ in range(20):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            e1.record()
            e1.synchronize()
            times.append(e0.elapsed_time(e1))
    times.sort()
    ms = times[len(times) // 2]
    flops = 4.0 * B * L * L * H * d / (2 if causal else 1)
    return ms, flops / (ms * 1e-3) / 1e12


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--json")
    args = ap.parse_args()
    ours = [json.loads(line) for line in open(args.ours)]
    out = open(args.json, "w") if args.json else None
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    print(f"{'dtype':5} {'d':>4} {'L':>6} {'causal':>6} {'ours TF/s':>10} {'FA2 TF/s':>9} {'ratio':>6}")
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16}
    for r in ours:
        ms, tf = time_fa2(dt[r["dtype"]], r["d"], r["L"], bool(r["causal"]))
        print(f"{r['dtype']:5} {r['d']:4d} {r['L']:6d} {r['causal']:6d} {r['tflops']:10.1f} {tf:9.1f} "
              f"{r['tflops'] / tf:6.2f}")
        if out:
            out.write(json.dumps({**r, "impl": "torch_fa2", "ms": ms, "tflops": tf}) + "\n")


if __name__ == "__main__":
    main()
