"""Compile the paged decode kernel (or a variant of it) for sm_90 without a GPU and print what its
main loop executes: shared memory, registers, async copies and the SASS instruction mix.

Triton builds TTGIR, PTX and a cubin for any target on a machine without a GPU; the cuobjdump in
Triton's wheel disassembles the cubin. Use the GPU's Triton release (3.6.0 on the H200 machine) in
a scratch venv to see what the GPU will run. Shapes are Llama-3-8B's (head_dim 128, 4 query heads
per KV head), dense reads.

    PYTHONPATH=. python3 benchmarks/inspect_decode_sass.py [--kernel PATH] [--fp8] \
        [--block-n 128] [--warps 8] [--stages 2] [--page-size 16]
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

POINTERS = {"Q": "*bf16", "KS": "*fp32", "VS": "*fp32", "PT": "*i32", "LEN": "*i32",
            "LIST": "*i32", "CNT": "*i32", "Part": "*fp32", "PartLSE": "*fp32"}  # fmt: skip
# strides that are 1 in every call, which the JIT turns into constants
UNIT_STRIDES = {"stride_od", "stride_ss", "stride_tp", "stride_ch", "stride_lh", "stride_ip"}


def compile_split_kernel(path: str, fp8: bool, block_n: int, warps: int, stages: int, page: int):
    """The split kernel of the module at ``path``, compiled as the JIT would specialise it."""
    spec = importlib.util.spec_from_file_location("decode_variant", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn = module._decode_split_kernel
    constexprs = dict(HEAD_DIM=128, G_PAD=16, PAGE_SIZE=page, BLOCK_N=block_n, SPARSE=False,
                      FP8=fp8, F16=fp8, LOG_WEIGHT=False, DOT_PRECISION="tf32",
                      INT32_OFFSETS=True)  # fmt: skip
    pool = "*fp8e4nv" if fp8 else "*bf16"
    signature, constants, attrs = {}, {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs or name in UNIT_STRIDES:
            signature[name], constants[name] = "constexpr", constexprs.get(name, 1)
        elif name in ("KP", "VP") or name in POINTERS:
            signature[name] = pool if name in ("KP", "VP") else POINTERS[name]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name == "qk_scale":
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
            if name.startswith("stride") and name not in fn.do_not_specialize:
                attrs[(i,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn, signature, constants, attrs)
    options = {"num_warps": warps, "num_stages": stages}
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)


def cuobjdump(kernel, flag: str) -> str:
    """What the cuobjdump in Triton's wheel prints for the compiled ``kernel``'s cubin with ``flag``
    (``-sass``: the disassembly; ``-res-usage``: registers and memory)."""
    bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(kernel.asm["cubin"])
        cubin.flush()
        run = [f"{bin_dir}/cuobjdump", flag, cubin.name]
        return subprocess.run(run, capture_output=True, text=True, check=True).stdout


def loop_bodies(sass: str) -> list[collections.Counter]:
    """Opcode counts of the body of each backward branch (``BRA`` of any form) in ``sass``."""
    code = re.findall(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", sass)
    bodies = []
    for addr, text in code:
        target = re.search(r"BRA(?:\.\S+)? .*?0x([0-9a-f]+)", text)
        if target and int(target.group(1), 16) < int(addr, 16):
            lo, hi = int(target.group(1), 16), int(addr, 16)
            body = [t for a, t in code if lo <= int(a, 16) <= hi]
            bodies.append(collections.Counter(t.split()[1 if t[0] == "@" else 0] for t in body))
    return bodies


def loop_mix(sass: str) -> collections.Counter:
    """Opcode counts of the longest backward branch's body (the kernel's main loop)."""
    return max(loop_bodies(sass), key=lambda mix: sum(mix.values()), default=collections.Counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", default="attnsieve/kernels/decode.py")
    parser.add_argument("--fp8", action="store_true", help="FP8 pools instead of bf16")
    parser.add_argument("--block-n", type=int, default=128)
    parser.add_argument("--warps", type=int, default=8)
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--page-size", type=int, default=16)
    args = parser.parse_args()
    kernel = compile_split_kernel(
        args.kernel, args.fp8, args.block_n, args.warps, args.stages, args.page_size
    )
    ttgir = kernel.asm["ttgir"]
    sass = cuobjdump(kernel, "-sass")
    regs = re.search(r"REG:(\d+)", cuobjdump(kernel, "-res-usage"))
    buffers = sorted(set(re.findall(r"memdesc<(\d+)x\d+x\d+x", ttgir)))
    waits = re.findall(r"async_wait %[^{]*\{num = (\d+)", ttgir)
    mix = loop_mix(sass)
    print(f"triton {triton.__version__}; shared memory {kernel.metadata.shared} B, registers "
          f"{regs.group(1) if regs else '?'} a thread; K/V tile buffers {buffers}, async waits "
          f"allow {waits} copies in flight")  # fmt: skip
    print(f"main loop: {sum(mix.values())} instructions a thread;", ", ".join(
        f"{op} {n}" for op, n in mix.most_common(16)))  # fmt: skip


if __name__ == "__main__":
    main()
