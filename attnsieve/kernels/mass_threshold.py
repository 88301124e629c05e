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
- Longer rows (FlexPrefill's whole-head block maps: few rows of 65K-1M entries, of which a
  plan searches the query-aware heads' only): 8 passes fix the bits 4 at a time (3 in the last),
  all in one launch. A row is cut into at most 64 chunks (of 512 entries or more); a pass writes
  the mass of each chunk at or above 16 candidates t + j · 2^shift (j = 0 in the first pass is
  the row's total), and the next one sums a row's chunks in a fixed order (deterministic) and
  takes the largest accepted candidate as its t. The chunks of the searched rows are shared out
  among at most as many programs as the GPU has SMs, which wait for each other between passes
  on a counter in global memory, where nine launches (eight passes and the masks) each waited
  a few microseconds of latency for little work: one of 32 rows of 65K entries (FlexPrefill's
  one query-aware head at 32K) 31 against 52 us on the H200, of 1M entries 76 against 138, all
  32 rows of 1M entries searched 893 against 893 (benchmarks/results/h200/plan48/). So the
  programs must all run at once. Each fits an SM alone and waits for nothing but the others,
  so they do on a GPU that runs one such launch at a time beside work that ends; a launch
  confined to fewer SMs than the device has (an MPS share, a green context), or two of them on
  two streams each holding part of the SMs, could stall (CUDA guarantees co-residency only to
  cooperative launches, which this is not: not measured, nor tried under graph capture). A row
  whose own threshold is <= 0 (it keeps nothing) is not searched.

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

from attnsieve.kernels import INTERPRET, check_triton_device, sm_count

_MAX_BLOCK = 8192  # longest row one program holds in registers: 16 entries a thread at 16 warps
_MAX_CHUNKS = 64  # chunks of a long row (the partial masses every narrowing reads)
_MIN_CHUNK = 512  # fewest entries in a chunk
_CHUNK = 8192  # most entries whose loads a long-row program issues at once
_SUB_WAYS = 8192  # entries x candidates a long-row program compares at once
_BITS = 4  # bits of t* a long-row pass fixes (2^_BITS candidates)
_BLOCK_R = 1024  # rows' thresholds a long-row program counts at once
_KEEP_BLOCK = 4096  # entries a long-row program zeroes at once
_WIDE_AT = 2**31  # row offsets from here on need int64


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
    keep_all = tl.full([], 0, tl.int1)  # a tensor either way: loops carry it
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
def _narrowed(PART, TS, TARGET, GAMMA, i_r, n_chunks, shift, ways, gamma,
              STEP: tl.constexpr, GAMMA_ROW: tl.constexpr, WAYS: tl.constexpr,
              BLOCK_C: tl.constexpr):
    """The row's t after a pass (its masses at WAYS candidates per chunk in PART, the t before
    it in TS) and its target: the largest candidate not rejected. STEP 1 narrows the first pass,
    whose candidate 0 is key 0: the row's total, which sets the target. Read past L1 (".cg"):
    other programs wrote them since this program last read the same buffers."""
    o_w = tl.arange(0, WAYS)
    if STEP != 1:  # loaded before the partial masses, so that the loads overlap
        t = tl.load(TS + i_r, cache_modifier=".cg")
        target = tl.load(TARGET + i_r, cache_modifier=".cg")
    o_c = tl.arange(0, BLOCK_C)  # every chunk at once, in a fixed order: the same t* every run
    p_part = PART + (i_r * n_chunks + o_c[:, None]) * WAYS + o_w[None, :]
    b_part = tl.load(p_part, mask=(o_c < n_chunks)[:, None], other=0.0, cache_modifier=".cg")
    b_mass = tl.sum(b_part, 0)
    if STEP == 1:
        g, _ = _gamma(GAMMA, gamma, i_r, GAMMA_ROW)
        t = tl.full([], 0, tl.int32)
        target = g * tl.sum(tl.where(o_w == 0, b_mass, 0.0), 0)
    cand = t + ((o_w % ways) << shift)
    return tl.max(tl.where(b_mass < target, t, cand), 0), target


@triton.jit
def _pass_t(PART, TS, TARGET, GAMMA, i_r, i_pass, n_chunks, gamma,
            GAMMA_ROW: tl.constexpr, BITS: tl.constexpr, BLOCK_C: tl.constexpr):
    """The row's t and target for pass i_pass, narrowed from the pass before (PART, TS); pass 0
    starts at t 0 with no target yet."""
    t = tl.full([], 0, tl.int32)
    target = tl.full([], 0.0, tl.float32)
    if i_pass > 0:
        shift_in, ways_in = _shift_ways(i_pass - 1, BITS)
        if i_pass == 1:
            t, target = _narrowed(PART, TS, TARGET, GAMMA, i_r, n_chunks, shift_in, ways_in,
                                  gamma, 1, GAMMA_ROW, 1 << BITS, BLOCK_C)
        else:
            t, target = _narrowed(PART, TS, TARGET, GAMMA, i_r, n_chunks, shift_in, ways_in,
                                  gamma, 2, GAMMA_ROW, 1 << BITS, BLOCK_C)
    return t, target


@triton.jit
def _shift_ways(i_pass, BITS: tl.constexpr):
    """Pass i_pass fixes the BITS bits above ``shift`` (30..31-BITS first), the last pass the
    bits left (2^those candidates, fewer than 2^BITS)."""
    last: tl.constexpr = (31 - 1) // BITS
    return (tl.maximum(31 - BITS * (i_pass + 1), 0),
            tl.where(i_pass < last, 1 << BITS, 1 << (31 - BITS * last)))


@triton.jit
def _searched(GAMMA, o_r, n_rows):
    """Which of the rows o_r are searched: those in range whose threshold is not <= 0 (such a
    row keeps nothing; a NaN threshold is searched, and the search keeps nothing)."""
    g = tl.load(GAMMA + o_r, mask=o_r < n_rows, other=0.0)
    return ~(g <= 0.0) & (o_r < n_rows)


@triton.jit
def _searched_row(GAMMA, n_rows, k, GAMMA_ROW: tl.constexpr, BLOCK_R: tl.constexpr):
    """The k-th searched row (int64), counted BLOCK_R rows at a time; the k-th row without
    per-row thresholds."""
    if not GAMMA_ROW:
        return tl.cast(k, tl.int64)
    row = tl.full([], -1, tl.int64)
    seen = 0
    for i0 in range(0, n_rows, BLOCK_R):
        o_r = i0 + tl.arange(0, BLOCK_R)
        searched = _searched(GAMMA, o_r, n_rows)
        rank = seen + tl.cumsum(searched.to(tl.int32), 0) - 1
        row = tl.maximum(row, tl.max(tl.where(searched & (rank == k), o_r, -1), 0).to(tl.int64))
        seen += tl.sum(searched.to(tl.int32), 0)
    return row


@triton.jit
def _all_arrived(CNT, expected):
    """Wait until ``expected`` arrivals are counted at CNT (this program's included). The
    bar.syncs order every thread's stores before the release, and the acquire before every
    thread's loads after it. The arrival's old count goes unused, so the first acquire load
    need not wait for it."""
    tl.debug_barrier()
    tl.atomic_add(CNT, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(CNT, 0, sem="acquire", scope="gpu")  # an ld.acquire (Triton)
    while seen < expected:
        seen = tl.atomic_add(CNT, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _search_kernel(
    P, VALID, GAMMA, PART, TS, TARGET, CNT, OUT,
    stride_pr, stride_pl, stride_vr, stride_vl, L, n_rows, n_chunks, chunk, gamma,
    HAS_VALID: tl.constexpr, GAMMA_ROW: tl.constexpr, CHUNK: tl.constexpr, SUB: tl.constexpr,
    BITS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
    KEEP_BLOCK: tl.constexpr, WIDE: tl.constexpr,
):
    """Every pass of the long rows' search and their masks in one launch of programs that all
    run at once (at most one an SM). The searched rows' chunks (items) are spread over the
    programs in contiguous runs, and the programs wait for each other between passes (a
    counter at CNT) where a launch a pass did. A pass writes the masses of an item at 2^BITS
    candidates above its row's t (PART) and, for the row's chunk 0, that t (TS); the next pass
    narrows them itself, reading every chunk in a fixed order (the same t* in every program).
    Rows that keep nothing are not searched: every program writes its share of their zero masks
    after the first pass (the programs without items, at once)."""
    i_p, n_p = tl.program_id(0), tl.num_programs(0)
    n_searched = n_rows
    if GAMMA_ROW:
        n_searched = 0
        for i0 in range(0, n_rows, BLOCK_R):
            searched = _searched(GAMMA, i0 + tl.arange(0, BLOCK_R), n_rows)
            n_searched += tl.sum(searched.to(tl.int32), 0)
    items = n_searched * n_chunks
    per = tl.maximum(tl.cdiv(items, n_p), 1)
    n_busy = tl.cdiv(items, per)  # programs with items; the others take part in no pass
    lo = tl.minimum(i_p * per, items)
    hi = tl.minimum(lo + per, items)
    # a row in range stands in for a program without items (its first row -1, or n_rows without
    # per-row thresholds): read by the mask phase's narrowing, never used
    r_first = _searched_row(GAMMA, n_rows, lo // n_chunks, GAMMA_ROW, BLOCK_R)
    r_first = tl.minimum(tl.maximum(r_first, 0), n_rows - 1)
    WAYS: tl.constexpr = 1 << BITS
    LAST: tl.constexpr = (31 - 1) // BITS  # the last pass
    o_w = tl.arange(0, WAYS)
    stride_part = n_rows * n_chunks * WAYS
    for i_pass in range(tl.where(i_p < n_busy, LAST + 1, 0)):
        shift, ways = _shift_ways(i_pass, BITS)
        part_in = PART + ((i_pass + 1) % 2) * stride_part  # the pass before's
        ts_in = TS + ((i_pass + 1) % 2) * n_rows
        i_r = r_first
        t, target = _pass_t(part_in, ts_in, TARGET, GAMMA, i_r, i_pass, n_chunks, gamma,
                            GAMMA_ROW, BITS, BLOCK_C)
        for it in range(lo, hi):
            i_c = tl.cast(it % n_chunks, tl.int64 if WIDE else tl.int32)  # a tensor (interpreter)
            if (i_c == 0) & (it != lo):  # the next searched row
                i_r = _searched_row(GAMMA, n_rows, it // n_chunks, GAMMA_ROW, BLOCK_R)
                t, target = _pass_t(part_in, ts_in, TARGET, GAMMA, i_r, i_pass, n_chunks,
                                    gamma, GAMMA_ROW, BITS, BLOCK_C)
            # ways < WAYS (the last pass) repeats candidates rather than carrying past bit 0
            cand = t + ((o_w % ways) << shift)  # [WAYS]
            b_acc = tl.zeros([SUB, WAYS], dtype=tl.float32)  # per-lane sums: one reduction
            for i_o in range(0, chunk, CHUNK):
                # unrolled, so that every load of CHUNK entries is in flight at once; each a
                # [SUB, 1] column: widening a loaded vector to [SUB, WAYS] converted its layout
                # through shared memory on every step (1.69 against 0.75 ms for 32 x 1M, H200)
                for i_l in tl.static_range(0, CHUNK, SUB):
                    o_l = i_c * chunk + i_o + i_l + tl.arange(0, SUB)[:, None]
                    b_p, _ = _load(P, VALID, i_r, o_l, L, stride_pr, stride_pl, stride_vr,
                                   stride_vl, HAS_VALID)
                    b_key = b_p.to(tl.int32, bitcast=True)
                    b_acc += tl.where(b_key >= cand[None, :], b_p, 0.0)  # [SUB, WAYS]
            p_part = PART + (i_pass % 2) * stride_part + (i_r * n_chunks + i_c) * WAYS
            tl.store(p_part + o_w, tl.sum(b_acc, 0))
            if i_c == 0:
                tl.store(TS + (i_pass % 2) * n_rows + i_r, t)
                if i_pass == 1:
                    tl.store(TARGET + i_r, target)
        _all_arrived(CNT, n_busy * (i_pass + 1))
        if i_pass == 0:
            _zero_rows(GAMMA, OUT, L, n_rows, i_p, n_p, GAMMA_ROW, KEEP_BLOCK)
    if n_busy <= i_p:
        _zero_rows(GAMMA, OUT, L, n_rows, i_p, n_p, GAMMA_ROW, KEEP_BLOCK)
    # the masks of this program's items, by the t* the last pass narrows to
    part_last, ts_last = PART + (LAST % 2) * stride_part, TS + (LAST % 2) * n_rows
    shift_last, ways_last = _shift_ways(LAST, BITS)
    i_r = r_first
    t, _ = _narrowed(part_last, ts_last, TARGET, GAMMA, i_r, n_chunks, shift_last, ways_last,
                     gamma, 2, GAMMA_ROW, WAYS, BLOCK_C)
    _, keep_all = _gamma(GAMMA, gamma, i_r, GAMMA_ROW)
    for it in range(lo, hi):
        i_c = tl.cast(it % n_chunks, tl.int64 if WIDE else tl.int32)  # a tensor (interpreter)
        if (i_c == 0) & (it != lo):
            i_r = _searched_row(GAMMA, n_rows, it // n_chunks, GAMMA_ROW, BLOCK_R)
            t, _ = _narrowed(part_last, ts_last, TARGET, GAMMA, i_r, n_chunks, shift_last,
                             ways_last, gamma, 2, GAMMA_ROW, WAYS, BLOCK_C)
            _, keep_all = _gamma(GAMMA, gamma, i_r, GAMMA_ROW)
        for i_o in range(0, chunk, CHUNK):
            o_l = i_c * chunk + i_o + tl.arange(0, CHUNK)
            b_p, m_v = _load(P, VALID, i_r, o_l, L, stride_pr, stride_pl, stride_vr, stride_vl,
                             HAS_VALID)
            _store_keep(OUT, i_r, o_l, L, b_p, m_v, t, keep_all)


@triton.jit
def _zero_rows(GAMMA, OUT, L, n_rows, i_p, n_p, GAMMA_ROW: tl.constexpr,
               KEEP_BLOCK: tl.constexpr):
    """Zeros for the masks of the rows that keep nothing (none without per-row thresholds):
    program i_p's share of (row, block)."""
    if not GAMMA_ROW:
        return
    n_blk = tl.cdiv(L, KEEP_BLOCK)
    per = tl.cdiv(n_rows * n_blk, n_p)
    u_lo = i_p * per
    u_hi = tl.minimum(u_lo + per, n_rows * n_blk)
    for i_r in range(u_lo // n_blk, tl.cdiv(u_hi, n_blk)):
        if tl.load(GAMMA + i_r) <= 0.0:  # not `_searched`; one load a row, not a block
            b_lo = tl.maximum(u_lo - i_r * n_blk, 0)
            for i_b in range(b_lo, tl.minimum(u_hi - i_r * n_blk, n_blk)):
                # int64: rows of just under 2^31 entries would overflow int32 in the last block
                o_l = tl.cast(i_b, tl.int64) * KEEP_BLOCK + tl.arange(0, KEEP_BLOCK)
                p_out = OUT + tl.cast(i_r, tl.int64) * L + o_l
                tl.store(p_out, tl.zeros([KEEP_BLOCK], dtype=tl.uint8), mask=o_l < L)
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
        # at most _MAX_CHUNKS chunks a row, none shorter than _MIN_CHUNK entries: one searched
        # row (most of FlexPrefill's plans) is then one chunk a program, on up to 64 programs
        chunk = max(_MIN_CHUNK, triton.next_power_of_2(triton.cdiv(length, _MAX_CHUNKS)))
        n_chunks = triton.cdiv(length, chunk)
        # the interpreter runs programs one after the other: one program, which waits for no other
        programs = 1 if INTERPRET else min(sm_count(probs.device), rows * n_chunks)
        # two buffers of partial masses and of t (a pass reads one, writes the other), the
        # targets, and the arrival counter (zeroed with the t of the first pass)
        parts = torch.empty((2, rows, n_chunks, 2**_BITS), dtype=torch.float32, device=probs.device)
        ts = torch.zeros(2 * rows + 1, dtype=torch.int32, device=probs.device)
        target = torch.empty(rows, dtype=torch.float32, device=probs.device)
        _search_kernel[(programs,)](
            p, v, g, parts, ts, target, ts[2 * rows:], out, *strides, length, rows, n_chunks,
            chunk, gamma, **flags, CHUNK=min(chunk, _CHUNK), SUB=min(chunk, _SUB_WAYS >> _BITS),
            BITS=_BITS, BLOCK_C=triton.next_power_of_2(n_chunks),
            BLOCK_R=min(_BLOCK_R, triton.next_power_of_2(rows)), KEEP_BLOCK=_KEEP_BLOCK,
            WIDE=length + chunk >= _WIDE_AT, num_warps=8,
        )  # fmt: skip
    return out.view(torch.bool).view(probs.shape)
