"""Calibration of the GPU at CogVideoX-5B's shapes with PyTorch (no Rust):
torch's FA2 and cuDNN attention, bf16/fp8 GEMM ceilings, an elementwise
bandwidth reference, and the cuDNN version libcogvideo would load there
(../shared/reference/gpu-attention.md section 8)."""

import os

import torch
import torch.nn.functional as F

print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(),
      "cudnn", torch.backends.cudnn.version())
try:
    import nvidia.cudnn

    print("cudnn wheel dir", os.path.dirname(nvidia.cudnn.__file__))
except Exception as e:  # noqa: BLE001 - report whatever is missing
    print("no nvidia.cudnn module:", e)


def bench(fn, n=5):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(True), torch.cuda.Event(True)
    s.record()
    for _ in range(n):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) / n


B, H, S, D = 2, 48, 17776, 64
q, k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
fl = 4 * B * H * S * S * D
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

for be in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
    try:
        with sdpa_kernel(be):
            ms = bench(lambda: F.scaled_dot_product_attention(q, k, v))
        print(be, f"{ms:.2f} ms  {fl / ms / 1e9:.0f} TFLOP/s")
    except Exception as ex:  # noqa: BLE001
        print(be, "n/a", str(ex)[:120])
del q, k, v
M = 2 * 17776
for K, N in ((3072, 3072), (3072, 9216), (3072, 12288), (12288, 3072)):
    a = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
    ms = bench(lambda: a @ w.t())
    print("bf16", M, K, N, f"{2 * M * K * N / ms / 1e9:.0f} TFLOP/s")
    try:
        a8, w8 = a.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
        one = torch.ones((), device="cuda")
        ms = bench(lambda: torch._scaled_mm(a8, w8.t(), scale_a=one, scale_b=one,
                                            out_dtype=torch.bfloat16))
        print("fp8 ", M, K, N, f"{2 * M * K * N / ms / 1e9:.0f} TFLOP/s")
    except Exception as ex:  # noqa: BLE001
        print("fp8 n/a", str(ex)[:120])
x = torch.randn(M, 3072, device="cuda", dtype=torch.bfloat16)
ms = bench(lambda: F.layer_norm(x, (3072,)))
print("layernorm", f"{2 * x.numel() * 2 / ms / 1e9:.0f} GB/s")
