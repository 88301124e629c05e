"""Compile the Gluon INT8·FP8 kernel (`attnsieve/kernels/quant_hopper.py`, or a variant of it) for
sm_90 without a GPU and print its shared memory, registers, spills and its loops' SASS mix.

Triton's JIT compiles without launching (`warmup`) once the active driver reports an sm_90 target:
a stand-in driver does that here, and CPU tensors stand in for the GPU ones. Use the GPU's Triton
release (3.6.0 on the device machines: Gluon changes between releases) in a scratch folder, e.g.
``PYTHONPATH=/tmp/t36:.``. Shapes are Llama-3-8B's (32 query / 8 KV heads, head_dim 128), in
order or over a layout of 128-query blocks (``--sparse``).

    PYTHONPATH=. python3 benchmarks/inspect_quant_hopper_sass.py [--kernel PATH] [--sparse] \
        [--sass FILE]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import re

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver

from benchmarks.inspect_decode_sass import cuobjdump, loop_bodies


class Sm90Driver:
    """What the JIT asks the active driver before it compiles, answered for sm_90 without a GPU
    (the real driver cannot even be created on a machine without one)."""

    def get_current_target(self) -> GPUTarget:
        return GPUTarget("cuda", 90, 32)

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")


def compile_kernel(path: str, sparse: bool):
    """The module's `_kernel` compiled for sm_90 as `quant_hopper.attention` launches it."""
    spec = importlib.util.spec_from_file_location("quant_hopper_variant", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if module.gluon is None:
        raise SystemExit(f"Gluon is not usable with Triton {triton.__version__}: use 3.6.0")
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    h_q, h_kv, n, d = 32, 8, 4096, 128
    q = torch.empty(1, h_q, n, d, dtype=torch.bfloat16)
    k2 = torch.empty(h_kv * n, d, dtype=torch.int8)
    v2 = torch.empty(h_kv * d, n, dtype=torch.float8_e4m3fn)
    tile = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=8, rank=2)
    k_desc = TensorDescriptor(k2, list(k2.shape), list(k2.stride()), [module.BLOCK_N, d], tile)
    v_desc = TensorDescriptor(v2, list(v2.shape), list(v2.stride()), [d, module.BLOCK_N], tile)
    dtypes = (torch.float32, torch.int8, torch.int32)
    floats, flags, ints = (torch.empty(4096, dtype=t) for t in dtypes)
    lists = (ints, ints) if sparse else (floats, floats)
    list_strides = (4096, 0, 32, 0, 0, 1) if sparse else (0,) * 6
    before = driver._active
    driver.set_active(Sm90Driver())
    try:
        return module._kernel.warmup(
            q, k_desc, v_desc, q, q, floats, floats, floats, flags, flags, *lists, *q.stride(),
            *q.stride(), *list_strides, n, n, h_q, h_kv, 1, 0.1, BLOCK_M=module.BLOCK_M,
            BLOCK_N=module.BLOCK_N, BLOCK_Q=128 if sparse else module.BLOCK_M, HEAD_DIM=d,
            STAGES=module.STAGES, SPARSE=sparse, RETURN_LSE=False, num_warps=4, maxnreg=128,
            grid=(n // module.BLOCK_M, h_q),
        )  # fmt: skip
    finally:
        driver._active = before


def loops(sass: str) -> list[collections.Counter]:
    """Opcode counts of the body of each backward branch that issues a warpgroup MMA and stores
    nothing to global memory: the consumer's loops over key tiles (whole tiles, then masked
    ones). Longer back edges span the partitions and the epilogue's stores."""
    return [
        mix
        for mix in loop_bodies(sass)
        if any("GMMA" in op for op in mix) and not any(op.startswith("STG") for op in mix)
    ]


def spills(mix: collections.Counter) -> str:
    """Local-memory stores and loads of any width (STL, STL.64, LDL.128, ...) in ``mix``."""
    count = {
        op: sum(n for name, n in mix.items() if name.split(".")[0] == op) for op in ("STL", "LDL")
    }
    return f"spills {count['STL']} stores, {count['LDL']} loads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", default="attnsieve/kernels/quant_hopper.py")
    parser.add_argument("--sparse", action="store_true", help="over a block layout, not in order")
    parser.add_argument("--sass", help="also write the whole SASS to this file")
    args = parser.parse_args()
    kernel = compile_kernel(args.kernel, args.sparse)
    sass = cuobjdump(kernel, "-sass")
    if args.sass:
        with open(args.sass, "w") as f:
            f.write(sass)
    opcode = r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z]\S*)"
    ops = collections.Counter(re.findall(opcode, sass))
    print(f"triton {triton.__version__}; shared memory {kernel.metadata.shared} B a program; "
          f"{sum(ops.values())} instructions; {spills(ops)}")  # fmt: skip
    for i, mix in enumerate(loops(sass)):
        top = ", ".join(f"{op} {n}" for op, n in mix.most_common(10))
        print(f"loop {i}: {sum(mix.values())} instructions a tile; {spills(mix)}; {top}")


if __name__ == "__main__":
    main()
