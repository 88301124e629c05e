"""Cumulative-mass thresholds in Triton: per row, the largest entries holding ``threshold`` of the
row's mass, found by a search on the bits of the threshold value instead of a sort of the row.

For p >= 0 the float32 bits read as int32 order as the values, so t* (the largest value t whose
entries >= t hold at least the target gamma × total) is fixed bit by bit from the top: a candidate
key c is accepted unless mass(key >= c) < target. The mass only falls as c rises, in floats too
(each is the same fixed-order sum with some entries replaced by 0), so this finds t* exactly as
the sums round. The mask is then (key >= t*) & (p > 0) & valid, every valid entry where a per-row
threshold is >= 1.

- Rows of at most _MAX_BLOCK entries: one program per row holds its row in registers, bisects
  the 31 bits (one masked sum each) and writes the mask. One launch.
- Longer rows (FlexPrefill's whole-head block maps: few rows of ~1M entries): 8 passes fix the
  bits 4 at a time (3 in the last). In a pass, program (row, chunk) writes the mass of its chunk
  (8192 entries; 4096 for rows of 128K to 256K) at or above 16 candidates t + j · 2^shift
  (j = 0 in the first pass is the row's total). Each program of the next pass first sums the
  pass before's chunks in a fixed order (deterministic) and takes the largest accepted candidate
  as its t, so no launch narrows in between: 9 launches with the mask's, 9 reads of the row.
  Rows of more than 64 chunks of 8192 (512K entries) are narrowed by a program per row between
  passes instead (17 launches): there every program summing every chunk cost more than the
  launches. A row whose own threshold is <= 0 (it keeps nothing) skips the passes.

No host synchronisation, fixed shapes (CUDA-graph capturable). A NaN target (a valid NaN entry,
or a NaN threshold) rejects no candidate, t* becomes the largest key and nothing is kept (as in
the twin). The twin is :func:`attnsieve.kernels.mass_threshold_reference.mass_threshold`;
`attnsieve.api.mass_threshold` picks between the two and checks the arguments (this launcher
trusts its callers).
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from attnsieve.kernels import check_triton_device

_MAX_BLOCK = 8192  # longest row one program holds in registers: 16 entries a thread at 16 warps
_CHUNK = 8192  # most entries per program of a long-row pass
_SHORT_CHUNK = 4096  # entries per program of a pass over rows of 128K to 256K entries
_SUB = 512  # entries a long-row program compares with the candidates at once
_WAYS = 16  # candidates per long-row pass
_KEEP_BLOCK = 4096  # entries per program of the long-row mask pass
_BLOCK_C = 64  # chunk partials a narrowing program sums at once
_WIDE_AT = 2**31  # row offsets from here on need int64
# (shift, ways) of the long-row passes: bits 30..27, 26..23, ..., 6..3, then 2..0
_PASSES = [(27 - 4 * i, 16) for i in range(7)] + [(0, 8)]


# fmt: off
@triton.jit
def _load(P, VALID, i_r, o_l, L, stride_pr, stride_pl, stride_vr, stride_vl,
          HAS_VALID: tl.constexpr):
    """Entries o_l of row i_r as (p, m_v): invalid entries and those past L read p = 0."""
    o_l64 = o_l.to(tl.int64)
    m_v = o_l < L
    if HAS_VALID:
        m_v &= tl.load(VALID + i_r * stride_vr + o_l64 * stride_vl, mask=m_v, other=0) != 0
    b_p = tl.load(P + i_r * stride_pr + o_l64 * stride_pl, mask=m_v, other=0.0)
    return b_p, m_v


@triton.jit
def _gamma(GAMMA, gamma, i_r, GAMMA_ROW: tl.constexpr):
    """The row's threshold and whether it keeps every valid entry (a number >= 1 never gets here:
    the launcher answers it, so a number rounding up to 1.0 in float32 is not taken for one)."""
    g = gamma
    keep_all = False
    if GAMMA_ROW:
        g = tl.load(GAMMA + i_r)
        keep_all = g >= 1.0
    return g, keep_all


@triton.jit
def _store_keep(OUT, i_r, o_l, L, b_p, m_v, t, keep_all):
    b_key = b_p.to(tl.int32, bitcast=True)
    m_keep = tl.where(keep_all, m_v, (b_key >= t) & (b_p > 0.0) & m_v)
    tl.store(OUT + i_r * L + o_l, m_keep.to(tl.uint8), mask=o_l < L)


@triton.jit
def _short_kernel(
    P, VALID, GAMMA, OUT,
    stride_pr, stride_pl, stride_vr, stride_vl, L, gamma,
    HAS_VALID: tl.constexpr, GAMMA_ROW: tl.constexpr, BLOCK: tl.constexpr,
):
    i_r = tl.program_id(0).to(tl.int64)
    o_l = tl.arange(0, BLOCK)
    b_p, m_v = _load(P, VALID, i_r, o_l, L, stride_pr, stride_pl, stride_vr, stride_vl, HAS_VALID)
    b_key = b_p.to(tl.int32, bitcast=True)  # [BLOCK]; >= 0 for p >= +0.0
    g, keep_all = _gamma(GAMMA, gamma, i_r, GAMMA_ROW)
    t = mass_cut(P, b_p, b_key, g * tl.sum(b_p, 0), L, 0, True, BLOCK)
    _store_keep(OUT, i_r, o_l, L, b_p, m_v, t, keep_all)


@triton.jit
def mass_cut(p_x, b_p, b_key, target, L, stride, SINGLE: tl.constexpr, BLOCK: tl.constexpr):
    """t*: the largest key t whose entries (p >= 0) at or above it hold ``target``, of the row
    b_p / b_key in registers (SINGLE) or of the L entries at p_x, re-read BLOCK at a time."""
    # with bits above fixed, setting a lower bit raises t, so bits go from the top; "not <"
    # accepts on a NaN target (nothing kept)
    t = tl.full([], 0, tl.int32)
    for i_bit in range(31):
        cand = t | (1 << (30 - i_bit))
        if SINGLE:
            mass = tl.sum(tl.where(b_key >= cand, b_p, 0.0), 0)
        else:
            mass = 0.0
            for i_l in range(0, L, BLOCK):
                o_l = i_l + tl.arange(0, BLOCK)
                b_x = tl.load(p_x + o_l.to(tl.int64) * stride, mask=o_l < L, other=0.0)
                mass += tl.sum(tl.where(b_x.to(tl.int32, bitcast=True) >= cand, b_x, 0.0), 0)
        t = tl.where(mass < target, t, cand)
    return t


@triton.jit
def _keeps_nothing(GAMMA, i_r, GAMMA_ROW: tl.constexpr):
    """A row whose own threshold is <= 0 keeps nothing (every candidate is accepted): its passes
    are skipped. FlexPrefill gives 0 to the heads whose query-aware map it drops."""
    if GAMMA_ROW:
        return tl.load(GAMMA + i_r) <= 0.0
    return False


@triton.jit
def _narrowed(PART, TS, TARGET, GAMMA, i_r, n_chunks, shift, ways, gamma,
              STEP: tl.constexpr, GAMMA_ROW: tl.constexpr, WAYS: tl.constexpr,
              BLOCK_C: tl.constexpr):
    """The row's t after a pass (its masses at 16 candidates per chunk in PART, the t before it
    in TS) and its target: the largest candidate not rejected. STEP 1 narrows the first pass,
    whose candidate 0 is key 0: the row's total, which sets the target."""
    o_w = tl.arange(0, WAYS)
    if STEP != 1:  # loaded before the partial masses, so that the two loads overlap
        t = tl.load(TS + i_r)
        target = tl.load(TARGET + i_r)
    b_mass = tl.zeros([WAYS], dtype=tl.float32)
    for i_c in range(0, n_chunks, BLOCK_C):  # chunks in a fixed order: the same t* every run
        o_c = i_c + tl.arange(0, BLOCK_C)
        p_part = PART + (i_r * n_chunks + o_c[:, None]) * WAYS + o_w[None, :]
        b_mass += tl.sum(tl.load(p_part, mask=(o_c < n_chunks)[:, None], other=0.0), 0)
    if STEP == 1:
        g, _ = _gamma(GAMMA, gamma, i_r, GAMMA_ROW)
        t = tl.full([], 0, tl.int32)
        target = g * tl.sum(tl.where(o_w == 0, b_mass, 0.0), 0)
    cand = t + ((o_w % ways) << shift)
    return tl.max(tl.where(b_mass < target, t, cand), 0), target


@triton.jit
def _masses_kernel(
    P, VALID, GAMMA, PART_IN, TS_IN, PART, TS, TARGET,
    stride_pr, stride_pl, stride_vr, stride_vl, L, n_rows, n_chunks, shift_in, ways_in, shift,
    ways, gamma,
    STEP: tl.constexpr, HAS_VALID: tl.constexpr, GAMMA_ROW: tl.constexpr, CHUNK: tl.constexpr,
    SUB: tl.constexpr, WAYS: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr,
):
    """A pass: the masses of the program's chunk at 16 candidates above the row's t (PART). With
    STEP 1 or 2 every program first narrows the pass before itself (its chunks' partial masses:
    no launch in between), chunk 0 keeping the t it finds (TS) for the next pass; with STEP 0
    the t is read (TS_IN: zero in the first pass, else `_narrow_kernel`'s)."""
    # one grid axis over (chunk, row): y and z stop at 65535, and either count can pass it (2^28
    # entries a row are 32768 chunks; block_topk's rows at 1M tokens are 262144). Rows vary
    # fastest, as on the two-axis grid this replaced.
    i = tl.program_id(0).to(tl.int64)
    # int32 chunk offsets unless a row's pass int32 (rows of 2^31 entries or more: a query-aware
    # map of 16-key blocks at 1M tokens); int64 ones cost the common rows instructions
    i_r, i_c = i % n_rows, (i // n_rows).to(tl.int64 if WIDE else tl.int32)
    if _keeps_nothing(GAMMA, i_r, GAMMA_ROW):
        return
    if STEP == 0:  # the first pass (TS_IN zero), or the launch before narrowed this row's t
        t = tl.load(TS_IN + i_r)
    else:
        t, target = _narrowed(PART_IN, TS_IN, TARGET, GAMMA, i_r, n_chunks, shift_in, ways_in,
                              gamma, STEP, GAMMA_ROW, WAYS, BLOCK_C)
        if i_c == 0:
            tl.store(TS + i_r, t)
            if STEP == 1:
                tl.store(TARGET + i_r, target)
    o_w = tl.arange(0, WAYS)
    # ways < WAYS (the last pass) repeats candidates rather than carrying past bit 0
    cand = t + ((o_w % ways) << shift)  # [WAYS]
    b_acc = tl.zeros([SUB, WAYS], dtype=tl.float32)  # per-lane sums: one reduction per chunk
    # unrolled, so that every load of the chunk is in flight at once: a loop waited for each
    # (offline sm_90 SASS), 16 latencies a program where a pass has little else to do
    for i_l in tl.static_range(0, CHUNK, SUB):
        # loaded as a [SUB, 1] column: widening a loaded vector to [SUB, WAYS] converted its
        # layout through shared memory on every step (1.69 against 0.75 ms for 32 x 1M, H200)
        o_l = i_c * CHUNK + i_l + tl.arange(0, SUB)[:, None]
        b_p, _ = _load(P, VALID, i_r, o_l, L, stride_pr, stride_pl, stride_vr, stride_vl,
                       HAS_VALID)
        b_key = b_p.to(tl.int32, bitcast=True)
        b_acc += tl.where(b_key >= cand[None, :], b_p, 0.0)  # [SUB, WAYS]
    tl.store(PART + (i_r * n_chunks + i_c) * WAYS + o_w, tl.sum(b_acc, 0))


@triton.jit
def _narrow_kernel(
    PART, TS, TARGET, GAMMA, n_chunks, shift, ways, gamma,
    STEP: tl.constexpr, GAMMA_ROW: tl.constexpr, WAYS: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """The row's t after a pass, in place, where its chunks are too many for every program of
    the next pass to sum them (32 x 1M maps: 923 against 779 us, H200, mass43/)."""
    i_r = tl.program_id(0).to(tl.int64)
    if _keeps_nothing(GAMMA, i_r, GAMMA_ROW):
        return
    t, target = _narrowed(PART, TS, TARGET, GAMMA, i_r, n_chunks, shift, ways, gamma, STEP,
                          GAMMA_ROW, WAYS, BLOCK_C)
    tl.store(TS + i_r, t)
    if STEP == 1:
        tl.store(TARGET + i_r, target)


@triton.jit
def _keep_kernel(
    P, VALID, GAMMA, PART_IN, TS_IN, TARGET, OUT,
    stride_pr, stride_pl, stride_vr, stride_vl, L, n_rows, n_chunks, shift_in, ways_in, gamma,
    HAS_VALID: tl.constexpr, GAMMA_ROW: tl.constexpr, NARROWED: tl.constexpr,
    BLOCK: tl.constexpr, WAYS: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr,
):
    """The mask, each program narrowing the last pass itself unless NARROWED (TS_IN holds t*); a
    row that keeps nothing is written as such without being read (the largest key, what the
    search would find, keeps no entry p > 0)."""
    i = tl.program_id(0).to(tl.int64)  # one grid axis over (block, row), as above
    i_r, i_c = i % n_rows, (i // n_rows).to(tl.int64 if WIDE else tl.int32)
    o_l = i_c * BLOCK + tl.arange(0, BLOCK)
    if _keeps_nothing(GAMMA, i_r, GAMMA_ROW):
        tl.store(OUT + i_r * L + o_l, tl.zeros([BLOCK], dtype=tl.uint8), mask=o_l < L)
        return
    b_p, m_v = _load(P, VALID, i_r, o_l, L, stride_pr, stride_pl, stride_vr, stride_vl, HAS_VALID)
    _, keep_all = _gamma(GAMMA, gamma, i_r, GAMMA_ROW)
    if NARROWED:
        t = tl.load(TS_IN + i_r)
    else:
        t, _ = _narrowed(PART_IN, TS_IN, TARGET, GAMMA, i_r, n_chunks, shift_in, ways_in, gamma,
                         2, GAMMA_ROW, WAYS, BLOCK_C)
    _store_keep(OUT, i_r, o_l, L, b_p, m_v, t, keep_all)
# fmt: on


def mass_threshold(probs: Tensor, threshold: float | Tensor, valid: Tensor | None = None) -> Tensor:
    """bool like ``probs`` (contiguous): per row (last dim), the entries at or above t*, the
    largest value whose entries at or above it hold ``threshold`` × the row's total. Triton.

    Args:
        probs: float (..., L), entries >= 0, any strides (computed in float32).
        threshold: a number, or a float tensor broadcasting against (..., 1) on probs' device.
        valid: None or bool broadcasting to probs: other entries count as 0 and are never kept.

    Zeros are never kept, ties at t* all are; a row whose threshold is >= 1 keeps every valid
    entry. `attnsieve.api.mass_threshold` checks the arguments.
    """
    check_triton_device("probs", probs)
    if valid is not None:
        valid = valid.expand_as(probs)
    if not isinstance(threshold, Tensor) and threshold >= 1:  # every valid entry, no rounding
        if valid is None:
            return torch.ones_like(probs, dtype=torch.bool, memory_format=torch.contiguous_format)
        return valid.clone(memory_format=torch.contiguous_format)
    lead, length = probs.shape[:-1], probs.shape[-1]
    rows = math.prod(lead)
    out = torch.empty((rows, length), dtype=torch.uint8, device=probs.device)
    if out.numel() == 0:
        return out.view(torch.bool).view(probs.shape)
    p = probs.float().reshape(rows, length)
    v = p if valid is None else valid.view(torch.uint8).reshape(rows, length)
    if isinstance(threshold, Tensor):
        g, gamma = threshold.to(torch.float32).expand(*lead, 1).contiguous().view(rows), 0.0
    else:
        g, gamma = p, float(threshold)  # stays a kernel argument: no copy to the device
    flags = {"HAS_VALID": valid is not None, "GAMMA_ROW": isinstance(threshold, Tensor)}
    strides = (*p.stride(), *(v.stride() if valid is not None else (0, 0)))
    with torch.cuda.device(probs.device) if probs.is_cuda else contextlib.nullcontext():
        if length <= _MAX_BLOCK:
            block = max(triton.next_power_of_2(length), 16)
            _short_kernel[(rows,)](
                p, v, g, out, *strides, length, gamma, **flags, BLOCK=block,
                num_warps=min(16, max(1, block // 512)),
            )  # fmt: skip
            return out.view(torch.bool).view(probs.shape)
        # rows of more than _BLOCK_C / 4 chunks of _CHUNK that fit in _BLOCK_C chunks of
        # _SHORT_CHUNK (128K to 256K entries) take the short chunks, twice the programs:
        # FlexPrefill's 64K map (262K entries) in 64 took 77.6 against 88.1 us in 32; its 32K
        # map (65K) took 56.6 in 16 against 53.9 in 8, and 32 x 1M rows in short chunks 871.6
        # against 778.1 (loops44b/, loops44d/)
        short = _BLOCK_C // 4 * _CHUNK < length <= _BLOCK_C * _SHORT_CHUNK
        chunk = _SHORT_CHUNK if short else _CHUNK
        n_chunks = triton.cdiv(length, chunk)
        wide = length + chunk >= _WIDE_AT
        # two buffers of partial masses and of t, a pass reading one while writing the other;
        # rows of more chunks than a narrowing program sums at once are narrowed by a launch
        # between passes, in place in the first buffer of t
        parts = torch.empty((2, rows, n_chunks, _WAYS), dtype=torch.float32, device=probs.device)
        ts = torch.zeros((2, rows), dtype=torch.int32, device=probs.device)
        target = torch.empty(rows, dtype=torch.float32, device=probs.device)
        fused = n_chunks <= _BLOCK_C
        tiles = {"WAYS": _WAYS, "BLOCK_C": _BLOCK_C}
        before = (0, 0)  # (shift, ways) of the pass before
        for i, (shift, ways) in enumerate(_PASSES):
            t_in = ts[(i + 1) % 2] if fused else ts[0]
            _masses_kernel[(rows * n_chunks,)](
                p, v, g, parts[(i + 1) % 2], t_in, parts[i % 2], ts[i % 2], target, *strides,
                length, rows, n_chunks, *before, shift, ways, gamma, STEP=min(i, 2) if fused else 0,
                **flags, CHUNK=chunk, SUB=_SUB, **tiles, WIDE=wide, num_warps=8,
            )  # fmt: skip
            if not fused:
                _narrow_kernel[(rows,)](
                    parts[i % 2], ts[0], target, g, n_chunks, shift, ways, gamma,
                    STEP=min(i + 1, 2), GAMMA_ROW=flags["GAMMA_ROW"], **tiles, num_warps=4,
                )  # fmt: skip
            before = (shift, ways)
        last = len(_PASSES) - 1
        _keep_kernel[(rows * triton.cdiv(length, _KEEP_BLOCK),)](
            p, v, g, parts[last % 2], ts[last % 2] if fused else ts[0], target, out, *strides,
            length, rows, n_chunks, *before, gamma, **flags, NARROWED=not fused,
            BLOCK=_KEEP_BLOCK, **tiles, WIDE=wide, num_warps=8,
        )  # fmt: skip
    return out.view(torch.bool).view(probs.shape)
