"""Malformed input at every public entry point fails at once, with the exception type the contract
names and a message that names the argument (the README, "Use").

The table (`CASES`) covers attention, dense attention, the planning estimates, planners, `Layout`
constructors and methods, `AttentionConfig`, `patch`, the paged `Cache` and the decode kernel; the
CLI's user errors are in `tests/test_cli.py`. Each case is (id, call, exception type, regex on the
message). Below the table: hand-built layouts with bad contents fail on construction with the same
error, so no backend ever reads them, and `density` counts each computed pair once.
"""

import json
import math
import re
from dataclasses import replace

import pytest
import torch

import attnsieve
from attnsieve import api
from attnsieve.integrations import AttentionConfig
from attnsieve.kernels import INTERPRET
from attnsieve.layout import Layout
from attnsieve.methods import PerHeadPlanner, get_planner

B, HQ, HKV, N, M, D = 1, 4, 2, 40, 48, 32


def qkv(dtype=torch.float16, n=N, m=M, d=D, h_q=HQ, h_kv=HKV):
    q = torch.randn(B, h_q, n, d).to(dtype)
    k = torch.randn(B, h_kv, m, d).to(dtype)
    v = torch.randn(B, h_kv, m, d).to(dtype)
    return q, k, v


# the Triton backend's tensors: CUDA on a GPU machine, the CPU under the interpreter
TRITON_DEVICE = "cuda" if torch.cuda.is_available() and not INTERPRET else "cpu"


def triton_qkv(dtype=torch.float16, **kwargs):
    return dict(zip("qkv", (t.to(TRITON_DEVICE) for t in qkv(dtype, **kwargs)), strict=True))


def layout(n=N, m=M, heads=1, block=16):
    return Layout.dense(n, m, block_q=block, block_k=block, heads=heads)


def inference_empty(*shape):
    with torch.inference_mode():
        return torch.empty(*shape, dtype=torch.float16)


def meta(t):
    return t.to("meta")


# ---- attention -----------------------------------------------------------------------------
def attn(*, backend="reference", q=None, k=None, v=None, lay="default", **kwargs):
    dq, dk, dv = qkv()
    q, k, v = (dq if q is None else q), (dk if k is None else k), (dv if v is None else v)
    lay = layout() if isinstance(lay, str) and lay == "default" else lay
    return attnsieve.attention(q, k, v, lay, backend=backend, **kwargs)


ATTENTION = [
    ("q-not-tensor", lambda: attn(q=[[1.0]]), TypeError, r"^q: expected a torch\.Tensor"),
    ("q-3-dims", lambda: attn(q=torch.randn(HQ, N, D).half()), ValueError, r"^q: expected 4 dims"),
    (
        "q-int",
        lambda: attn(q=torch.ones(B, HQ, N, D, dtype=torch.int32)),
        TypeError,
        r"^q: .*float",
    ),
    ("q-meta", lambda: attn(q=meta(qkv()[0])), ValueError, r"^q: meta tensors"),
    ("k-meta", lambda: attn(k=meta(qkv()[1])), ValueError, r"^k: meta tensors"),
    ("v-meta", lambda: attn(v=meta(qkv()[2])), ValueError, r"\bv\b.*meta"),
    ("k-dtype", lambda: attn(k=qkv()[1].bfloat16()), TypeError, r"^q, k: expected one dtype"),
    ("v-dtype", lambda: attn(v=qkv()[2].float()), TypeError, r"^k, v: expected one dtype"),
    ("batch", lambda: attn(k=torch.randn(2, HKV, M, D).half()), ValueError, r"^q, k: batch"),
    ("head-dim", lambda: attn(k=qkv(d=16)[1]), ValueError, r"^q, k: head_dim"),
    ("gqa-ratio", lambda: attn(q=qkv(h_q=3)[0]), ValueError, r"^q, k: H_q=3"),
    (
        "no-query-heads",
        lambda: attn(q=qkv(h_q=0)[0]),
        ValueError,
        r"^q, k: H_q=0 must be a positive",
    ),
    ("v-shape", lambda: attn(v=qkv(m=M + 1)[2]), ValueError, r"^k, v: expected equal shapes"),
    ("layout-str", lambda: attn(lay="dense"), TypeError, r"^layout: expected"),
    ("layout-int", lambda: attn(lay=3), TypeError, r"^layout: expected"),
    ("layout-n", lambda: attn(lay=layout(n=N + 1)), ValueError, r"^layout: built for"),
    ("layout-heads", lambda: attn(lay=layout(heads=3)), ValueError, r"^layout: heads 3"),
    ("out-shape", lambda: attn(out=torch.empty(B, HQ, N, 16).half()), ValueError, r"^out: "),
    ("out-list", lambda: attn(out=[0.0]), TypeError, r"^out: expected"),
    (
        "out-requires-grad",
        lambda: attn(out=torch.empty(B, HQ, N, D).half().requires_grad_()),
        ValueError,
        r"^out: expected a buffer that does not require grad",
    ),
    (
        "out-inference-tensor",
        lambda: attn(out=inference_empty(B, HQ, N, D)),
        ValueError,
        r"^out: an inference tensor",
    ),
    (
        "out-expanded",
        lambda: attn(out=torch.empty(B, HQ, N, 1).half().expand(B, HQ, N, D)),
        ValueError,
        r"^out: expected a buffer whose elements do not share memory",
    ),
    (
        "out-expanded-triton",
        lambda: attn(backend="triton", out=torch.empty(B, 1, N, D).half().expand(B, HQ, N, D)),
        ValueError,
        r"^out: expected a buffer whose elements do not share memory",
    ),
    (
        "out-is-q",
        lambda: (lambda q: attn(q=q, out=q))(qkv()[0]),
        ValueError,
        r"^out: expected a buffer apart from q, got one that overlaps it",
    ),
    ("precision", lambda: attn(precision="fp4"), ValueError, r"^precision: expected"),
    (
        "int8-block-16",
        lambda: attn(precision="int8-fp8"),
        ValueError,
        r"^layout\.block_k: expected a power of two in \[32, 128\]",
    ),
    ("backend", lambda: attn(backend="cuda"), ValueError, r"^backend: expected"),
    (
        "triton-float32",
        lambda: attn(backend="triton", lay=layout().to(TRITON_DEVICE), **triton_qkv(torch.float32)),
        TypeError,
        r"^q, k, v: the Triton kernel takes float16",
    ),
    (
        "triton-head-dim-24",
        lambda: attn(backend="triton", lay=layout().to(TRITON_DEVICE), **triton_qkv(d=24)),
        ValueError,
        r"^q: head_dim must be a power of two",
    ),
    (
        "triton-block-24",
        lambda: attn(
            backend="triton",
            lay=Layout.dense(N, M, block_q=24, block_k=16).to(TRITON_DEVICE),
            **triton_qkv(),
        ),
        ValueError,
        r"^layout\.block_q: must be a power of two",
    ),
]

# ---- scale: identical on every path ------------------------------------------------------------
SCALES = [
    ("negative", -1.0, ValueError),
    ("zero", 0.0, ValueError),
    ("nan", math.nan, ValueError),
    ("inf", math.inf, ValueError),
    ("str", "big", TypeError),
    ("bool", True, TypeError),
]


def dense_attention(**kwargs):
    q, k, v = qkv(torch.float32)
    return api.dense_attention(q, k, v, **kwargs)


SCALE_CASES = [
    (f"scale-{name}-{path}", call, exc, r"^scale: expected a positive finite float or None")
    for name, value, exc in SCALES
    for path, call in (
        ("reference", lambda value=value: attn(scale=value)),
        ("triton", lambda value=value: attn(backend="triton", scale=value)),
        ("triton-no-layout", lambda value=value: attn(backend="triton", lay=None, scale=value)),
        ("dense_attention", lambda value=value: dense_attention(scale=value)),
        ("dense_attention-softcap", lambda value=value: dense_attention(scale=value, softcap=5.0)),
    )
]

# ---- planning estimates ------------------------------------------------------------------------
x32 = lambda *shape: torch.randn(*shape)  # noqa: E731


def pooled(qp=None, kp=None, **kwargs):
    qp = x32(B, HQ, 3, D) if qp is None else qp
    kp = x32(B, HKV, 3, D) if kp is None else kp
    sizes = dict(num_queries=N, num_keys=M, block_q=16, block_k=16)
    return api.pooled_block_probs(qp, kp, **{**sizes, **kwargs})


PLANNING = [
    ("pool-block-0", lambda: api.block_mean_pool(x32(B, HQ, N, D), 0), ValueError, r"^block: "),
    ("pool-block-bool", lambda: api.block_mean_pool(x32(B, HQ, N, D), True), ValueError, r"^block"),
    ("pool-x-3-dims", lambda: api.block_mean_pool(x32(HQ, N, D), 16), ValueError, r"^x: expected"),
    (
        "pool-x-int",
        lambda: api.block_mean_pool(torch.ones(B, HQ, N, D, dtype=torch.int64), 16),
        TypeError,
        r"^x: expected a floating",
    ),
    (
        "pool-x-meta",
        lambda: api.block_mean_pool(meta(x32(B, 1, N, D)), 16),
        ValueError,
        r"^x: meta",
    ),
    (
        "lqs-last-q-0",
        lambda: api.last_query_stats(*qkv(torch.float32)[:2], last_q=0, block_k=16),
        ValueError,
        r"^last_q: expected an int in \[1, N=40\]",
    ),
    (
        "lqs-last-q-past-n",
        lambda: api.last_query_stats(*qkv(torch.float32)[:2], last_q=N + 1, block_k=16),
        ValueError,
        r"^last_q: ",
    ),
    (
        "lqs-block-k-0",
        lambda: api.last_query_stats(*qkv(torch.float32)[:2], last_q=8, block_k=0),
        ValueError,
        r"^block_k: ",
    ),
    (
        "lqs-k-meta",
        lambda: api.last_query_stats(qkv()[0], meta(qkv()[1]), last_q=8, block_k=16),
        ValueError,
        r"^k: meta",
    ),
    (
        "antidiag-stride-3",
        lambda: api.antidiagonal_block_scores(
            *qkv(torch.float32)[:2], stride=3, block_q=16, block_k=16
        ),
        ValueError,
        r"^stride: must divide",
    ),
    (
        "antidiag-stride-0",
        lambda: api.antidiagonal_block_scores(
            *qkv(torch.float32)[:2], stride=0, block_q=16, block_k=16
        ),
        ValueError,
        r"^stride: expected an int",
    ),
    (
        "antidiag-gqa",
        lambda: api.antidiagonal_block_scores(
            qkv(torch.float32, h_q=3)[0], qkv(torch.float32)[1], stride=4, block_q=16, block_k=16
        ),
        ValueError,
        r"^q, k: H_q=3",
    ),
    (
        "pooled-float16",
        lambda: pooled(qp=x32(B, HQ, 3, D).half()),
        TypeError,
        r"^q_pooled: expected a float32",
    ),
    ("pooled-blocks", lambda: pooled(kp=x32(B, HKV, 5, D)), ValueError, r"^k_pooled: expected"),
    (
        "pooled-heads",
        lambda: pooled(qp=x32(B, 3, 3, D)),
        ValueError,
        r"^q_pooled, k_pooled: H_q must be",
    ),
    ("pooled-list", lambda: pooled(kp=[1.0]), TypeError, r"^k_pooled: expected"),
]


def block_layout(mask=None, **kwargs):
    mask = torch.ones(B, 1, 3, 3, dtype=torch.bool) if mask is None else mask
    sizes = dict(block_q=16, block_k=16, num_queries=N, num_keys=M, backend="triton")
    return api.block_layout(mask, **{**sizes, **kwargs})


def line_mask(**change):
    none = torch.zeros(B, 1, 3, dtype=torch.bool)  # N = 40, M = 48: 3 blocks of 16
    args = dict(verticals=none, bands=none, band=16, block_q=16, block_k=16, num_queries=N,
                num_keys=M, backend="triton")  # fmt: skip
    args.update(change)
    return api.line_block_mask(args.pop("verticals"), args.pop("bands"), **args)


LAYOUT_OPS = [
    ("line-mask-float", lambda: line_mask(verticals=torch.zeros(B, 1, 3)), TypeError, r"^vertic"),
    (
        "line-mask-blocks",
        lambda: line_mask(verticals=torch.zeros(B, 1, 2, dtype=torch.bool)),
        ValueError,
        r"^verticals: expected shape \(B, H, 3\)",
    ),
    (
        "line-mask-bands",
        lambda: line_mask(bands=torch.zeros(B, 1, 4, dtype=torch.bool)),
        ValueError,
        r"^bands: expected shape \(1, 1, 3\)",
    ),
    (
        "line-mask-extra",
        lambda: line_mask(extra=torch.zeros(B, 1, 3, 2, dtype=torch.bool)),
        ValueError,
        r"^extra: expected shape",
    ),
    (
        "line-mask-heads-alone",
        lambda: line_mask(extra_heads=torch.ones(B, 1, dtype=torch.bool)),
        ValueError,
        r"^extra_heads: expected None",
    ),
    (
        "line-mask-device",
        lambda: line_mask(bands=torch.zeros(B, 1, 3, dtype=torch.bool, device="meta")),
        ValueError,
        r"^bands: meta tensors hold no data",  # the other device a CPU-only run has
    ),
    ("line-mask-band", lambda: line_mask(band=0), ValueError, r"^band: "),
    ("line-mask-keys", lambda: line_mask(num_keys=0), ValueError, r"^num_keys: "),
    ("line-mask-backend", lambda: line_mask(backend="gpu"), ValueError, r"^backend: "),
    ("block-layout-float", lambda: block_layout(torch.ones(B, 1, 3, 3)), TypeError, r"^mask: "),
    ("block-layout-shape", lambda: block_layout(torch.ones(B, 1, 3, 4) > 0), ValueError, r"^mask"),
    ("block-layout-keys", lambda: block_layout(num_keys=0), ValueError, r"^num_keys: "),
    ("block-layout-block", lambda: block_layout(block_q=0), ValueError, r"^block_q: "),
    ("block-layout-backend", lambda: block_layout(backend="gpu"), ValueError, r"^backend: "),
    ("density-not-layout", lambda: api.layout_density("dense"), TypeError, r"^layout: expected"),
    ("density-causal", lambda: api.layout_density(layout(), causal=1), TypeError, r"^causal: "),
]

# ---- planners ----------------------------------------------------------------------------------
Q32, K32 = qkv(torch.float32)[:2]

PLANNERS = [
    ("planner-unknown", lambda: get_planner("nope"), ValueError, r"^name: unknown planner 'nope'"),
    *(
        (
            f"{name}-{side}",
            lambda name=name, q=q, k=k: get_planner(name).plan(q, k),
            ValueError,
            r"^q, k: a plan needs a batch, queries and keys",
        )
        for name in ("block_topk", "vertical_slash", "flexprefill")
        for side, q, k in (
            ("no-keys", x32(1, 2, 64, 32), x32(1, 2, 0, 32)),
            ("no-queries", x32(1, 2, 0, 32), x32(1, 2, 64, 32)),
            ("no-batch", x32(0, 4, 64, 32), x32(0, 2, 64, 32)),
        )
    ),  # IndexError / RuntimeError, or an error naming last_q, before the twenty-seventh session
    (
        "per-head-not-a-list",
        lambda: PerHeadPlanner(get_planner("dense")),
        TypeError,
        r"^planners: expected a non-empty list",
    ),
    ("planner-name-int", lambda: get_planner(3), ValueError, r"^name: unknown planner"),
    (
        "flexprefill-block-q-48",
        lambda: get_planner("flexprefill", block_q=48),
        ValueError,
        r"^block_q: expected a power of two",
    ),
    ("flexprefill-gamma", lambda: get_planner("flexprefill", gamma=1.5), ValueError, r"^gamma"),
    (
        "flexprefill-unknown-field",
        lambda: get_planner("flexprefill", gama=0.9),
        TypeError,
        r"unexpected keyword argument 'gama'",
    ),
    ("streaming-block-k", lambda: get_planner("streaming", block_k=0), ValueError, r"^block_k"),
    ("xattention-stride", lambda: get_planner("xattention", stride=3), ValueError, r"^stride"),
    ("hip-budget", lambda: get_planner("hip", budget_tokens=0), ValueError, r"^budget_tokens"),
    (
        "vertical-slash-bool",
        lambda: get_planner("vertical_slash", share_kv_group="yes"),
        TypeError,
        r"^share_kv_group",
    ),
    (
        "block-topk-both",
        lambda: get_planner("block_topk", topk=4),
        ValueError,
        r"^topk, cdf_threshold",
    ),
    (
        "plan-causal-str",
        lambda: get_planner("streaming").plan(Q32, K32, causal="yes"),
        TypeError,
        r"^causal: expected a bool",
    ),
    ("plan-q-meta", lambda: get_planner("streaming").plan(meta(Q32), K32), ValueError, r"^q: meta"),
    (
        "plan-q-int",
        lambda: get_planner("dense").plan(Q32.int(), K32),
        TypeError,
        r"^q: expected a floating",
    ),
    (
        "plan-head-dim",
        lambda: get_planner("flexprefill").plan(Q32[..., :16], K32),
        ValueError,
        r"^q, k: head_dim",
    ),
    (
        "plan-noncausal-vs",
        lambda: get_planner("vertical_slash").plan(Q32, K32, causal=False),
        ValueError,
        r"^causal: ",
    ),
    ("per-head-empty", lambda: PerHeadPlanner([]), TypeError, r"^planners: expected"),
    (
        "per-head-length",
        lambda: PerHeadPlanner([get_planner("dense")] * 3).plan(Q32, K32),
        ValueError,
        r"^planners: got 3 planners for 4 query heads",
    ),
]

# ---- Layout constructors and methods ---------------------------------------------------------
I32 = torch.int32


def hand(idx, count, cols=None, ccount=None, n=64, m=64, block=32):
    """A Layout built directly from index lists (one batch, one head, QB = 2 query blocks)."""

    def t(x):
        return None if x is None else torch.tensor(x, dtype=I32)

    return Layout(t(idx), t(count), block, block, n, m, t(cols), t(ccount))


GOOD_IDX, GOOD_COUNT = [[[[0, -1], [0, 1]]]], [[[1, 2]]]
# Hand-built layouts with bad contents: (id, block_idx, block_count, column_idx, column_count,
# regex). Two query blocks of 32 rows over two key blocks of 32 keys.
BAD_CONTENTS = [
    ("unsorted", [[[[1, 0], [0, 1]]]], [[[2, 2]]], None, None, r"^block_idx: .*increasing"),
    ("duplicate", [[[[0, 0], [0, 1]]]], [[[2, 2]]], None, None, r"^block_idx: .*increasing"),
    ("count-past-width", GOOD_IDX, [[[3, 2]]], None, None, r"^block_count: expected values"),
    ("count-negative", GOOD_IDX, [[[-1, 2]]], None, None, r"^block_count: expected values"),
    ("index-past-end", [[[[0, 2], [0, 1]]]], [[[2, 2]]], None, None, r"^block_idx: .*\[0, 2\)"),
    ("index-negative", [[[[-1, 0], [0, 1]]]], [[[2, 2]]], None, None, r"^block_idx: .*\[0, 2\)"),
    (
        "column-in-block",
        GOOD_IDX,
        GOOD_COUNT,
        [[[[5], [40]]]],
        [[[1, 1]]],
        r"^column_idx: .*disjoint",
    ),
    (
        "column-unsorted",
        GOOD_IDX,
        GOOD_COUNT,
        [[[[50, 40], [-1, -1]]]],
        [[[2, 0]]],
        r"^column_idx: .*increasing",
    ),
    (
        "column-duplicate",
        GOOD_IDX,
        GOOD_COUNT,
        [[[[40, 40], [-1, -1]]]],
        [[[2, 0]]],
        r"^column_idx: .*increasing",
    ),
    ("column-past-end", GOOD_IDX, GOOD_COUNT, [[[[64], [-1]]]], [[[1, 0]]], r"^column_idx: .*64"),
    ("column-negative", GOOD_IDX, GOOD_COUNT, [[[[-3], [-1]]]], [[[1, 0]]], r"^column_idx: "),
    (
        "column-count-past-width",
        GOOD_IDX,
        GOOD_COUNT,
        [[[[40], [-1]]]],
        [[[2, 0]]],
        r"^column_count: expected values",
    ),
]

BAD_LAYOUT_CASES = [
    (f"layout-contents-{name}", lambda a=(i, c, ci, cc): hand(*a), ValueError, regex)
    for name, i, c, ci, cc, regex in BAD_CONTENTS
]


def topk(scores, k=2, **kw):
    return Layout.from_topk(scores, k, block_q=16, block_k=16, num_queries=N, num_keys=M, **kw)


def mask_layout(mask, **kw):
    sizes = {"block_q": 16, "block_k": 16, "num_queries": N, "num_keys": M, **kw}
    return Layout.from_block_mask(mask, **sizes)


LAYOUT = [
    (
        "layout-block-idx-int64",
        lambda: Layout(
            torch.zeros(1, 1, 2, 1).long(), torch.ones(1, 1, 2, dtype=I32), 32, 32, 64, 64
        ),
        TypeError,
        r"^block_idx: expected dtype torch\.int32",
    ),
    (
        "layout-block-idx-3-dims",
        lambda: Layout(
            torch.zeros(1, 2, 1, dtype=I32), torch.ones(1, 2, dtype=I32), 32, 32, 64, 64
        ),
        ValueError,
        r"^block_idx: expected 4 dims",
    ),
    (
        "layout-block-count-shape",
        lambda: hand(GOOD_IDX, [[[1, 2, 0]]]),
        ValueError,
        r"^block_count: expected shape",
    ),
    (
        "layout-block-idx-list",
        lambda: Layout([[0]], torch.ones(1, 1, 2, dtype=I32), 32, 32, 64, 64),
        TypeError,
        r"^block_idx: expected a torch\.Tensor",
    ),
    (
        "layout-columns-half-given",
        lambda: hand(GOOD_IDX, GOOD_COUNT, [[[[40], [-1]]]]),
        ValueError,
        r"^column_idx and column_count",
    ),
    ("layout-num-keys-bool", lambda: Layout.dense(N, True), ValueError, r"^num_keys: expected"),
    ("layout-num-queries-0", lambda: Layout.dense(0, M), ValueError, r"^num_queries: expected"),
    ("layout-block-q-0", lambda: Layout.dense(N, M, block_q=0), ValueError, r"^block_q: expected"),
    (
        "from-mask-int",
        lambda: mask_layout(torch.ones(1, 1, 3, 3, dtype=I32)),
        TypeError,
        r"^mask: expected a torch\.bool",
    ),
    (
        "from-mask-shape",
        lambda: mask_layout(torch.ones(1, 1, 3, 4, dtype=torch.bool)),
        ValueError,
        r"^mask: expected shape",
    ),
    (
        "from-topk-nan",
        lambda: topk(torch.full((1, 1, 3, 3), math.nan)),
        ValueError,
        r"^scores: contain NaN",
    ),
    (
        "from-topk-int",
        lambda: topk(torch.ones(1, 1, 3, 3, dtype=I32)),
        TypeError,
        r"^scores: expected",
    ),
    (
        "from-topk-k-negative",
        lambda: topk(torch.ones(1, 1, 3, 3), k=-1),
        ValueError,
        r"^k: expected",
    ),
    (
        "from-topk-shape",
        lambda: topk(torch.ones(1, 1, 3, 2)),
        ValueError,
        r"^scores: expected shape",
    ),
    (
        "with-columns-float",
        lambda: layout().with_columns(torch.zeros(1, 1, 3, 2)),
        TypeError,
        r"^column_idx: expected an int32/int64",
    ),
    (
        "with-columns-past-end",
        lambda: layout().with_columns(torch.full((1, 1, 3, 1), M)),
        ValueError,
        r"^column_idx: token indices",
    ),
    (
        "with-columns-blocks",
        lambda: layout().with_columns(torch.zeros(1, 1, 2, 1, dtype=I32)),
        ValueError,
        r"^column_idx: expected shape",
    ),
    (
        "with-columns-count-shape",
        lambda: layout().with_columns(
            torch.zeros(1, 1, 3, 2, dtype=I32), torch.ones(1, 1, 2, dtype=I32)
        ),
        ValueError,
        r"^column_count: expected shape",
    ),
    (
        "with-columns-heads",
        lambda: layout(heads=2).with_columns(torch.zeros(1, 3, 3, 1, dtype=I32)),
        ValueError,
        r"^column_idx: heads 3",
    ),
    ("cat-empty", lambda: Layout.cat([]), ValueError, r"^layouts: expected a non-empty list"),
    ("cat-generator", lambda: Layout.cat(x for x in [layout()]), ValueError, r"^layouts: expected"),
    ("cat-first-not-layout", lambda: Layout.cat([3, layout()]), TypeError, r"got a int$"),
    ("dense-causal-int", lambda: Layout.dense(N, M, causal=1), TypeError, r"^causal: expected a b"),
    (
        "topk-causal-int",
        lambda: Layout.from_topk(
            torch.zeros(1, 1, 3, 3), 1, block_q=16, block_k=16, num_queries=N, num_keys=M, causal=1
        ),
        TypeError,
        r"^causal: expected a b",
    ),
    ("mask-causal-int", lambda: layout().to_dense_mask(causal=1), TypeError, r"^causal: expected"),
    (
        "block-mask-no-batch",
        lambda: Layout.from_block_mask(
            torch.ones(0, 1, 3, 3, dtype=torch.bool),
            block_q=16,
            block_k=16,
            num_queries=N,
            num_keys=M,
        ),
        ValueError,
        r"^mask: expected shape \(B >= 1, H >= 1",
    ),
    ("cat-dim", lambda: Layout.cat([layout()], dim=2), ValueError, r"^dim: expected 0"),
    ("cat-dim-bool", lambda: Layout.cat([layout()], dim=True), ValueError, r"^dim: expected 0"),
    ("density-causal-int", lambda: layout().density(causal=0), TypeError, r"^causal: expected a b"),
    ("pairs-causal-int", lambda: layout().pairs(1), TypeError, r"^causal: expected a bool"),
    ("dense-pairs-causal-str", lambda: layout().dense_pairs("no"), TypeError, r"^causal: "),
    ("density-reduce-str", lambda: layout().density(reduce="no"), TypeError, r"^reduce: expected"),
    (
        "layout-meta",
        lambda: Layout(
            *(t.to("meta") for t in (layout().block_idx, layout().block_count)), 16, 16, N, M
        ),  # fmt: skip
        ValueError,
        r"^block_idx: meta tensors hold no data",
    ),
    (
        "cat-geometry",
        lambda: Layout.cat([layout(), layout(n=N + 1)]),
        ValueError,
        r"^layouts: \(block_q",
    ),
    ("union-type", lambda: layout().union("dense"), TypeError, r"^other: expected a Layout"),
    ("union-geometry", lambda: layout().union(layout(block=32)), ValueError, r"^other: "),
    (
        "intersection-heads",
        lambda: layout(heads=2).intersection(layout(heads=3)),
        ValueError,
        r"^other: heads 3",
    ),
    (
        "mask-rows-range",
        lambda: layout().mask_rows(5, 2),
        ValueError,
        r"^rows: expected 0 <= start",
    ),
]


# ---- AttentionConfig, from_json and patch ------------------------------------------------------
CONFIG = [
    ("config-precision", lambda: AttentionConfig(precision="fp4"), ValueError, r"^precision: "),
    (
        "config-min-len-0",
        lambda: AttentionConfig(min_prefill_length=0),
        ValueError,
        r"^min_prefill_length",
    ),
    ("config-page-size", lambda: AttentionConfig(page_size=12), ValueError, r"^page_size: "),
    ("config-backend", lambda: AttentionConfig(backend="cuda"), ValueError, r"^backend: "),
    (
        "config-tidaldecode-beside-a-kv-policy",
        lambda: AttentionConfig(
            decode="tidaldecode", layers={3: {"kv": {"method": "snapkv", "budget": 64}}}
        ),
        ValueError,
        r"^decode, kv: TidalDecode reuses one layer's token indices",
    ),
    (
        "config-layers-list",
        lambda: AttentionConfig(layers=[{}]),
        TypeError,
        r"^layers: expected a dict",
    ),
    (
        "config-layer-key",
        lambda: AttentionConfig(layers={"x": {}}),
        ValueError,
        r"^layers: keys must be",
    ),
    (
        "config-layer-entry",
        lambda: AttentionConfig(layers={0: "dense"}),
        TypeError,
        r"^layers\[0\]: expected a dict",
    ),
    (
        "config-layer-role",
        lambda: AttentionConfig(layers={0: {"prefil": "dense"}}),
        ValueError,
        r"^layers\[0\]: unknown roles \['prefil'\]",
    ),
    (
        "config-layer-unknown-planner",
        lambda: AttentionConfig(layers={"1": {"prefill": "nope"}}),
        ValueError,
        r"^layers\[1\]\['prefill'\]: unknown prefill method 'nope'",
    ),
    (
        "config-layer-bad-field",
        lambda: AttentionConfig(layers={3: {"prefill": {"method": "flexprefill", "gamma": 2}}}),
        ValueError,
        r"^layers\[3\]\['prefill'\]: gamma",
    ),
    (
        "config-layer-head-entry",
        lambda: AttentionConfig(layers={0: {"prefill": ["dense", "nope"]}}),
        ValueError,
        r"^layers\[0\]\['prefill'\]\[1\]: unknown prefill method",
    ),
    (
        "config-prefill-unknown",
        lambda: AttentionConfig(prefill="nope"),
        ValueError,
        r"^prefill: unknown prefill method",
    ),
    (
        "config-prefill-no-method",
        lambda: AttentionConfig(prefill={"gamma": 0.9}),
        TypeError,
        r"^prefill: expected a method name",
    ),
    (
        "config-kv-per-head",
        lambda: AttentionConfig(kv=["snapkv"]),
        ValueError,
        r"^kv: per-head lists",
    ),
    (
        "config-per-head-nested",
        lambda: AttentionConfig(layers={0: {"prefill": ["dense", ["dense"]]}}),
        TypeError,
        r"^layers\[0\]\['prefill'\]\[1\]: expected a method name .* got \['dense'\]",
    ),
    (
        "config-per-head-none",
        lambda: AttentionConfig(prefill=["dense", None]),
        TypeError,
        r"^prefill\[1\]: expected a method name .* got None",
    ),
    (
        "config-int8-fp8-key-blocks",
        lambda: AttentionConfig(
            prefill={"method": "streaming", "block_q": 16, "block_k": 16}, precision="int8-fp8"
        ),
        ValueError,
        r"^prefill: precision 'int8-fp8' takes key blocks of 32 to 128 tokens, but streaming "
        r"plans blocks of 16",
    ),
    (
        "config-int8-fp8-key-blocks-per-head",
        lambda: AttentionConfig(
            layers={1: {"prefill": ["dense", {"method": "block_topk", "block_k": 16}]}},
            precision="int8-fp8",
        ),
        ValueError,
        r"^layers\[1\]\['prefill'\]: precision 'int8-fp8' .* block_topk plans blocks of 16",
    ),
    (
        "config-int8-fp8-key-blocks-override",
        lambda: AttentionConfig(prefill={"method": "streaming", "block_k": 16}).override(
            precision="int8-fp8"
        ),
        ValueError,
        r"^prefill: precision 'int8-fp8' takes key blocks",
    ),
    (
        "from-json-type",
        lambda: AttentionConfig.from_json(3),
        TypeError,
        r"^source: expected a path, JSON text or a dict, got int",
    ),
    (
        "from-json-text-list",
        lambda: AttentionConfig.from_json(" [1, 2]"),
        ValueError,
        r"^source: expected a JSON object, got list",
    ),
    (
        "from-json-text-key-twice",
        lambda: AttentionConfig.from_json('{"kv": "snapkv", "kv": null}'),
        ValueError,
        r"^source: not valid JSON \(key 'kv' given twice in one object\)",
    ),
    (
        "from-json-dict-unknown",
        lambda: AttentionConfig.from_json({"prefil": "dense"}),
        ValueError,
        r"^source: unknown keys \['prefil'\]",
    ),
]

FILE_CASES = [
    ("from-json-missing", None, ValueError, r"cfg\.json: cannot read the config file"),
    ("from-json-decode", "{'prefill': 1}", ValueError, r"cfg\.json: not valid JSON .*line 1"),
    ("from-json-empty", "", ValueError, r"cfg\.json: not valid JSON"),
    ("from-json-array", "[1, 2]", ValueError, r"cfg\.json: expected a JSON object, got list"),
    ("from-json-unknown-key", '{"prefil": "dense"}', ValueError, r"cfg\.json: unknown keys"),
    (
        "from-json-key-twice",
        '{"prefill": "dense", "layers": {"1": {"prefill": "streaming", "prefill": "dense"}}}',
        ValueError,
        r"cfg\.json: key 'prefill' given twice in one object$",
    ),
    (
        "from-json-bad-layer",
        json.dumps({"layers": {"2": {"prefill": "nope"}}}),
        ValueError,
        r"^.*cfg\.json: layers\[2\]\['prefill'\]: unknown prefill method 'nope'",
    ),
]


# ---- paged cache and decode kernel (when present) ----------------------------------------------
def _cache_cases():
    try:
        from attnsieve.cache import Cache
    except ImportError:
        return []

    def cache(**kw):
        args = dict(num_layers=2, batch=1, kv_heads=2, head_dim=32, dtype=torch.float16)
        return Cache(**{**args, "device": "cpu", **kw})

    kv = torch.randn(1, 2, 5, 32).half()
    return [
        ("cache-num-layers-0", lambda: cache(num_layers=0), ValueError, r"^num_layers: "),
        ("cache-page-size", lambda: cache(page_size=12), ValueError, r"^page_size: "),
        ("cache-dtype", lambda: cache(dtype=torch.int8), TypeError, r"^dtype: expected one of"),
        ("cache-kv-dtype", lambda: cache(kv_dtype="int4"), ValueError, r"^kv_dtype: "),
        ("cache-device-name", lambda: cache(device="gpu"), ValueError, r"^device: expected an"),
        ("cache-device-meta", lambda: cache(device="meta"), ValueError, r"^device: meta"),
        ("cache-device-type", lambda: cache(device=1.5), TypeError, r"^device: expected a"),
        ("cache-append-layer", lambda: cache().append(2, kv, kv), ValueError, r"^layer: expected"),
        ("cache-append-k-3d", lambda: cache().append(0, kv[0], kv), ValueError, r"^k: expected 4"),
        ("cache-append-v-dtype", lambda: cache().append(0, kv, kv.float()), TypeError, r"^v: "),
        (
            "cache-append-heads",
            lambda: cache().append(0, kv[:, :1], kv[:, :1]),
            ValueError,
            r"^k: expected shape",
        ),
        ("cache-append-k-meta", lambda: cache().append(0, meta(kv), kv), ValueError, r"^k: meta"),
    ]


def _decode_cases():
    try:
        from attnsieve.kernels.decode import decode_attention
    except ImportError:
        return []

    def decode(**kw):
        pages = torch.randn(4, 16, 32).half()
        args = dict(
            q=torch.randn(1, 4, 32).half(),
            k_pages=pages,
            v_pages=pages,
            page_table=torch.tensor([[[0, 1], [2, 3]]], dtype=I32),
            lengths=torch.tensor([[20, 30]], dtype=I32),
        )
        args.update(kw)
        out, return_lse = args.pop("out", None), args.pop("return_lse", False)
        return decode_attention(args.pop("q"), *args.values(), out=out, return_lse=return_lse)

    return [
        ("decode-return-lse-int", lambda: decode(return_lse=1), TypeError, r"^return_lse: "),
        (
            "decode-q-4d",
            lambda: decode(q=torch.randn(1, 4, 1, 32).half()),
            ValueError,
            r"^q: expected 3 dims",
        ),
        ("decode-q-int", lambda: decode(q=torch.ones(1, 4, 32, dtype=I32)), TypeError, r"^q: "),
        (
            "decode-head-dim",
            lambda: decode(
                q=torch.randn(1, 4, 24).half(),
                k_pages=torch.randn(4, 16, 24).half(),
                v_pages=torch.randn(4, 16, 24).half(),
            ),
            ValueError,
            r"^q: head_dim",
        ),
        (
            "decode-k-pages-2d",
            lambda: decode(k_pages=torch.randn(4, 32).half()),
            ValueError,
            r"^k_pages: expected 3 dims",
        ),
        (
            "decode-page-table-list",
            lambda: decode(page_table=[[0]]),
            TypeError,
            r"^page_table: expected a torch",
        ),
        (
            "decode-out-expanded",
            lambda: decode(out=torch.empty(1, 1, 32).half().expand(1, 4, 32)),
            ValueError,
            r"^out: expected a buffer whose elements do not share memory",
        ),
        (
            "decode-lengths-int64",
            lambda: decode(lengths=torch.tensor([[20, 30]])),
            TypeError,
            r"^lengths: ",
        ),
    ]


# ---- gaps found by this table (fixed unless listed in OPEN, which are strict xfails) ---------
QP, KP = api.block_mean_pool(Q32, 16), api.block_mean_pool(K32, 16)
POOLED = dict(num_queries=N, num_keys=M, block_q=16, block_k=16)


def quest_scores_edited(edit):
    """`api.quest_page_scores` over a filled cache's view after ``edit(page_table, page_count)``."""
    from attnsieve.cache import Cache

    cache = Cache(1, 2, 2, 32, dtype=torch.float32, device="cpu")
    cache.append(0, torch.randn(2, 2, 40, 32), torch.randn(2, 2, 40, 32))
    view = cache.page_view(0)
    table, count = view.page_table.clone(), view.page_count.clone()
    edit(table, count)
    return api.quest_page_scores(
        torch.randn(2, 2, 32), view.key_min_pool, view.key_max_pool, table, count
    )


def _device_and_count_gaps():
    """Found by the api review: a tensor on another device than the tensors it is read with, and
    an index count outside its row. "meta" is the other device a CPU-only run has; the device
    comparison comes before the meta refusal, so these cases reach it."""
    from attnsieve.cache import Cache
    from attnsieve.methods.decode import DoubleSparsity, Quest, StepState, TidalDecode
    from attnsieve.views import KVView, PageView

    def cache():
        filled = Cache(1, 2, 2, 32, dtype=torch.float32, device="cpu")
        filled.append(0, torch.randn(2, 2, 40, 32), torch.randn(2, 2, 40, 32))
        filled.set_label_channels(0, torch.tensor([[0, 1], [2, 3]]))
        return filled

    def kv_view(**change):
        keys = torch.randn(2, 2, 40, 32)
        fields = dict(
            keys=keys, values=keys, positions=torch.arange(40).expand(2, 2, 40),
            lengths=torch.full((2, 2), 40, dtype=I32), queries=torch.randn(2, 4, 3, 32),
            query_positions=torch.arange(37, 40).expand(2, 3), layer=0, num_layers=1,
        )  # fmt: skip
        return KVView(**{**fields, **change})

    def page_view(name):
        fields = vars(cache().page_view(0)).copy()
        fields[name] = meta(fields[name])
        return PageView(**fields)

    def select(selector):
        return selector.select(meta(torch.randn(2, 4, 32)), cache().page_view(0), StepState())

    dense = Layout.dense(40, 48, block_q=16, block_k=16)
    cols = torch.full((1, 1, 3, 2), 20)
    unchecked = "accepted without an error: the selectors read it with the rest"
    return [
        (
            "kv-view-queries-device",
            lambda: kv_view(queries=meta(torch.randn(2, 4, 3, 32))),
            ValueError,
            r"^queries: expected device cpu, got meta",
            "KVView compared every field's device with the keys' but the queries'",
        ),
        (
            "decode-attention-query-device",
            lambda: api.decode_attention(meta(torch.randn(2, 4, 32)), cache(), 0),
            ValueError,
            r"^q: expected device cpu, got meta",
            "api.decode_attention left q's device to the kernel's check, which names k_pages",
        ),
        *(
            (
                f"selector-query-device-{type(selector).__name__}",
                lambda selector=selector: select(selector),
                ValueError,
                r"^q: expected device cpu, got meta",
                "the selectors' query check did not compare q's device with the view's",
            )
            for selector in (
                Quest(budget_tokens=16, dense_layers=0),
                TidalDecode(budget_tokens=16, select_layer=0),
                DoubleSparsity(budget_tokens=16, dense_layers=0, channels=[[0, 1], [2, 3]]),
            )
        ),
        (
            "page-view-pool-device",
            lambda: page_view("key_max_pool"),
            ValueError,
            r"^key_max_pool: expected device cpu, got meta",
            f"PageView checked key_max_pool's shape only: {unchecked}",
        ),
        (
            "page-view-labels-device",
            lambda: page_view("labels"),
            ValueError,
            r"^labels: expected the page table's device cpu, got meta",
            f"PageView checked the labels' shape only: {unchecked}",
        ),
        (
            "mass-threshold-device",
            lambda: api.mass_threshold(torch.rand(2, 3, 10), meta(torch.full((2, 3, 1), 0.5))),
            ValueError,
            r"^threshold: expected device cpu, got meta",
            "api.mass_threshold raised a TypeError for a threshold on another device",
        ),
        *(
            (
                f"layout-to-device-object-{name}",
                lambda device=device: dense.to(device),
                ValueError,
                pattern,
                "Layout.to checked a device given as a str only: a torch.device got an "
                "AssertionError or RuntimeError from torch, or an error naming block_idx",
            )
            for name, device, pattern in (
                ("meta", torch.device("meta"), r"^device: meta tensors hold no data"),
                ("absent", torch.device("cuda", 99), r"^device: expected an available device"),
            )
        ),
        *(
            (
                f"{where}-count-{name}",
                call,
                ValueError,
                rf"^{count}: expected values in \[0, 2\] \({idx}'s width\)",
                "a count past the row's width was read as the whole row, a negative one as none",
            )
            for name, value in (("past-width", 3), ("negative", -1))
            for where, call, count, idx in (
                (
                    "with-columns",
                    lambda value=value: dense.with_columns(cols, torch.full((1, 1, 3), value)),
                    "column_count",
                    "column_idx",
                ),
                (
                    "with-spans",
                    lambda value=value: dense.with_spans(
                        cols, cols + 4, torch.full((1, 1, 3), value)
                    ),
                    "count",
                    "start",
                ),
            )
        ),
    ]


GAPS = [
    *(
        (
            f"{name}-float64",
            call,
            TypeError,
            r"^(x|q): expected dtype in \(torch.float16, torch.bfloat16, torch.float32\)",
            "the planning estimates' twins computed float64 inputs in float32 (api.attention "
            "refused them)",
        )
        for name, call in (
            ("pool", lambda: api.block_mean_pool(qkv(torch.float64)[0], 16)),
            (
                "pool-qk",
                lambda: api.block_mean_pool_qk(*qkv(torch.float64)[:2], block_q=16, block_k=16),
            ),
            ("lqs", lambda: api.last_query_stats(*qkv(torch.float64)[:2], last_q=8, block_k=16)),
            (
                "antidiag",
                lambda: api.antidiagonal_block_scores(
                    *qkv(torch.float64)[:2], stride=8, block_q=16, block_k=16
                ),
            ),
        )
    ),
    (
        "quest-scores-reference-negative-page",
        lambda: quest_scores_edited(lambda table, count: table[0, 0, 0].fill_(-1)),
        ValueError,
        r"^page_table: counted entries must be pool rows in \[0, ",
        "the reference read a negative page table entry as another pool row (Python indexing)",
    ),
    (
        "quest-scores-reference-count-past-table",
        lambda: quest_scores_edited(lambda table, count: count[0, 0].fill_(table.shape[-1] + 1)),
        ValueError,
        r"^page_count: expected values in \[0, ",
        "the reference clamped a count past the table where decode's reference refuses it",
    ),
    (
        "lqs-scale-negative",
        lambda: api.last_query_stats(Q32, K32, last_q=8, block_k=16, scale=-1.0),
        ValueError,
        r"^scale: ",
        "api.last_query_stats does not call check_scale",
    ),
    (
        "antidiag-scale-nan",
        lambda: api.antidiagonal_block_scores(
            Q32, K32, stride=4, block_q=16, block_k=16, scale=math.nan
        ),
        ValueError,
        r"^scale: ",
        "api.antidiagonal_block_scores does not call check_scale",
    ),
    (
        "pooled-scale-str",
        lambda: api.pooled_block_probs(QP, KP, **POOLED, scale="big"),
        TypeError,
        r"^scale: ",
        "api.pooled_block_probs does not call check_scale (torch raises an unnamed TypeError)",
    ),
    (
        "pooled-block-q-0",
        lambda: api.pooled_block_probs(QP, KP, **{**POOLED, "block_q": 0}),
        ValueError,
        r"^block_q: ",
        "api.pooled_block_probs checks no size argument: ZeroDivisionError in cdiv",
    ),
    (
        "antidiag-block-q-0",
        lambda: api.antidiagonal_block_scores(Q32, K32, stride=4, block_q=0, block_k=16),
        ValueError,
        r"^block_q: ",
        "api.antidiagonal_block_scores does not check block_q/block_k (RuntimeError from a "
        "ZeroDivisionError in the kernel)",
    ),
    (
        "attention-causal-str",
        lambda: attn(causal="no"),
        TypeError,
        r"^causal: ",
        "api.attention does not check causal: 'no' is truthy and runs causal silently",
    ),
    (
        "dense-softcap-0",
        lambda: dense_attention(softcap=0.0),
        ValueError,
        r"^softcap: ",
        "api.dense_attention does not check softcap: 0 gives ZeroDivisionError, a negative cap "
        "silently flips the logits' sign",
    ),
    (
        "dense-dropout-2",
        lambda: dense_attention(dropout=2.0),
        ValueError,
        r"^dropout: ",
        "api.dense_attention does not check dropout (RuntimeError from SDPA)",
    ),
    (
        "dense-mask-int",
        lambda: dense_attention(mask=torch.ones(1, 1, N, M, dtype=I32)),
        TypeError,
        r"^mask: ",
        "api.dense_attention does not check mask (RuntimeError from SDPA)",
    ),
    (
        "layout-dense-heads-negative",
        lambda: Layout.dense(N, M, heads=-1),
        ValueError,
        r"^heads: ",
        "Layout.dense does not check batch/heads (RuntimeError from expand; batch=0 passes)",
    ),
    (
        "layout-mask-one-line",
        lambda: attn(lay=torch.zeros(3, 3, dtype=I32)),
        TypeError,
        r"^layout: expected",
        "api.attention's layout TypeError embeds the argument's repr: a tensor prints over "
        "several lines (use type(layout).__name__)",
    ),
    # found by the twenty-seventh session's audit
    (
        "attention-head-dim-0",
        lambda: attn(**dict(zip("qkv", qkv(d=0), strict=True))),
        ValueError,
        r"^q, k: expected head_dim >= 1",
        "check_qk accepts head_dim 0 (ZeroDivisionError in the reference's 1/sqrt(D))",
    ),
    (
        "attention-backend-empty",
        lambda: attn(backend=""),
        ValueError,
        r"^backend: ",
        "resolve_backend reads backend='' as unset and runs auto",
    ),
    (
        "pooled-causal-str",
        lambda: api.pooled_block_probs(QP, KP, **POOLED, causal="no"),
        TypeError,
        r"^causal: ",
        "api.pooled_block_probs does not check causal: 'no' runs causal silently",
    ),
    (
        "antidiag-causal-none",
        lambda: api.antidiagonal_block_scores(
            Q32, K32, stride=4, block_q=16, block_k=16, causal=None
        ),
        TypeError,
        r"^causal: ",
        "api.antidiagonal_block_scores does not check causal: None runs non-causal silently",
    ),
    (
        "pooled-meta",
        lambda: api.pooled_block_probs(meta(QP), meta(KP), **POOLED),
        ValueError,
        r"^q_pooled: meta tensors",
        "api.pooled_block_probs takes meta tensors (NotImplementedError from torch on Triton)",
    ),
    (
        "mass-threshold-meta",
        lambda: api.mass_threshold(meta(torch.rand(2, 3, 10)), 0.9),
        ValueError,
        r"^probs: meta tensors",
        "api.mass_threshold takes meta tensors (a meta result from the reference)",
    ),
    (
        "page-budget-meta",
        lambda: api.page_budget(
            meta(torch.ones(1, 2, dtype=I32)), meta(torch.ones(1, 2, dtype=I32)), 16, ratio=0.5
        ),
        ValueError,
        r"^lengths: meta tensors",
        "api.page_budget takes meta tensors (check_int32 did not refuse them)",
    ),
    (
        "page-budget-ratio-zero",
        lambda: api.page_budget(
            torch.ones(1, 2, dtype=I32), torch.ones(1, 2, dtype=I32), 16, ratio=0.0
        ),
        ValueError,
        r"^ratio: expected a fraction of each head's tokens in \(0, 1\]",
        "api.page_budget took ratio 0, which the selectors that call it refuse",
    ),
    (
        "page-budget-negative-count",
        lambda: api.page_budget(
            torch.full((1, 2), 20, dtype=I32),
            torch.full((1, 2), -2, dtype=I32),
            16,
            budget_tokens=16,
            backend="reference",
        ),  # fmt: skip
        ValueError,
        r"^page_count: expected values >= 0",
        "api.page_budget returned -2 pages for a head (its reference trusted the counts)",
    ),
    (
        "config-override-layers-list",
        lambda: AttentionConfig().override(layers=[1]),
        TypeError,
        r"^layers: expected a dict",
        "AttentionConfig.override iterates layers before the constructor checks them "
        "(AttributeError)",
    ),
    (
        "config-override-layers-entry",
        lambda: AttentionConfig().override(layers={0: "dense"}),
        TypeError,
        r"^layers\[0\]: expected a dict",
        "AttentionConfig.override iterates each layer's entry (AttributeError on a str)",
    ),
    (
        "config-layers-same-layer",
        lambda: AttentionConfig.from_json(
            {"layers": {"0": {"prefill": "dense"}, "00": {"prefill": None}}}
        ),
        ValueError,
        r"^layers: keys '0' and '00' both name layer 0",
        "two keys of one layer: the last silently wins",
    ),
    (
        "config-layers-superscript",
        lambda: AttentionConfig(layers={"\u00b2": {}}),
        ValueError,
        r"^layers: keys must be layer indices",
        "str.isdigit takes '²': int() raises an error that names no argument",
    ),
    *(
        (
            f"dense-mask-device-{path}",
            lambda softcap=softcap: dense_attention(
                mask=torch.ones(N, M, dtype=torch.bool, device="meta"), softcap=softcap
            ),
            ValueError,
            r"^mask: expected q's device cpu, got meta",
            "api.dense_attention does not check mask's device: SDPA took a meta mask on CPU "
            "queries, the soft-capped path raised a RuntimeError naming no argument",
        )
        for path, softcap in (("sdpa", None), ("softcap", 5.0))
    ),
    *(
        (
            f"attention-{str(dtype)[6:]}-{precision}",
            lambda dtype=dtype, precision=precision: attn(
                **dict(zip("qkv", qkv(dtype), strict=True)), precision=precision
            ),
            TypeError,
            r"^q: expected dtype in \(torch.float16, torch.bfloat16, torch.float32\)",
            "api.attention's reference computed float64 inputs in float32 and float8 ones into a "
            "float8 output (bf16 precision); only int8-fp8 refused them",
        )
        for dtype in (torch.float64, torch.float8_e4m3fn)
        for precision in ("bf16", "int8-fp8")
    ),
    *(
        (
            f"dense-attention-float8-{path}",
            lambda softcap=softcap: api.dense_attention(*qkv(torch.float8_e4m3fn), softcap=softcap),
            TypeError,
            r"^q: expected dtype in ",
            "api.dense_attention took float8 inputs: NotImplementedError from SDPA's CPU kernels",
        )
        for path, softcap in (("sdpa", None), ("softcap", 5.0))
    ),
    *_device_and_count_gaps(),
]


def _edge_cases():
    """Inputs a review found accepted, or refused deep inside torch (the thirty-third session)."""
    from attnsieve.cache import Cache
    from attnsieve.kernels.decode_reference import decode_reference
    from attnsieve.methods.decode import Quest, StepState

    def filled():
        cache = Cache(1, 2, 2, 32, dtype=torch.float32, device="cpu")
        cache.append(0, torch.randn(2, 2, 40, 32), torch.randn(2, 2, 40, 32))
        return cache

    def decode(q):
        return api.decode_attention(q, filled(), 0)

    def scores(q):
        view = filled().page_view(0)
        return api.quest_page_scores(
            q, view.key_min_pool, view.key_max_pool, view.page_table, view.page_count
        )

    def twice_listed():
        args = filled().kernel_args(0)
        twice = torch.tensor([[[0, 0, 1]] * 2] * 2, dtype=I32)
        return decode_reference(
            torch.randn(2, 2, 32), args.k_pages, args.v_pages, args.page_table, args.lengths,
            pages=twice, page_count=torch.full((2, 2), 3, dtype=I32),
        )  # fmt: skip

    def quest(q):
        return Quest(budget_tokens=16, dense_layers=0).select(q, filled().page_view(0), StepState())

    no_heads = torch.randn(2, 0, 32)
    sparse = qkv()[0].to_sparse()
    kv = torch.randn(1, 2, 5, 32).half()
    check = AttentionConfig(prefill="dense").check_model
    dense = r"expected a dense \(strided\) tensor, got layout torch.sparse_coo"
    heads = r"^q: expected \(B=2, a positive multiple"
    return [
        ("attention-q-sparse", lambda: attn(q=sparse), TypeError, rf"^q: {dense}"),
        (
            "dense_attention-q-sparse",
            lambda: api.dense_attention(sparse, *qkv()[1:]),
            TypeError,
            rf"^q: {dense}",
        ),
        (
            "cache-append-k-sparse",
            lambda: Cache(1, 1, 2, 32, dtype=torch.float16, device="cpu").append(
                0, kv.to_sparse(), kv
            ),
            TypeError,
            rf"^k: {dense}",
        ),
        (
            "dense_attention-softcap-inf",
            lambda: dense_attention(softcap=math.inf),
            ValueError,
            r"^softcap: expected a positive finite float",
        ),
        ("decode_attention-no-heads", lambda: decode(no_heads), ValueError, heads),
        ("quest_page_scores-no-heads", lambda: scores(no_heads), ValueError, heads),
        ("quest-select-no-heads", lambda: quest(no_heads), ValueError, r"^q: "),
        (
            "decode_attention-q-dtype",
            lambda: decode(torch.randn(2, 4, 32).bfloat16()),
            TypeError,
            r"^q: expected the cache's dtype torch.float32, got torch.bfloat16",
        ),
        ("decode_attention-head-dim", lambda: decode(torch.randn(2, 4, 64)), ValueError, heads),
        (
            "decode-reference-page-listed-twice",
            twice_listed,
            ValueError,
            r"^pages: each head's listed pages must be distinct and ascending",
        ),
        ("check_model-no-layers", lambda: check(0, 8, 2, 64), ValueError, r"^num_layers: "),
        ("check_model-heads-str", lambda: check(4, "8"), ValueError, r"^num_heads: "),
        ("check_model-kv-heads", lambda: check(4, 8, -2), ValueError, r"^kv_heads: "),
        (
            "check_model-gqa",
            lambda: check(4, 6, 4, 64),
            ValueError,
            r"^num_heads, kv_heads: expected a multiple of 4",
        ),
    ]


# ---- found by the fifty-first session's review (each was a silent result or an unnamed error) ---
def _review51_cases():
    from attnsieve.cache import Cache
    from attnsieve.methods.decode import StepState, TidalDecode

    config = AttentionConfig(layers={0: {"prefill": "dense"}})
    cache = Cache(2, 1, 2, 32, dtype=torch.float32, device="cpu")
    for layer in range(2):
        cache.append(layer, torch.randn(1, 2, 64, 32), torch.randn(1, 2, 64, 32))
    tidal = TidalDecode(budget_tokens=16, select_layer=0)
    lines = dict(block_q=16, block_k=16, num_queries=40, num_keys=48)
    dense = Layout.dense(40, 48, block_q=16, block_k=16)
    q, k, v = qkv(torch.float32)
    meta_idx = torch.zeros(1, 1, 3, 2, dtype=torch.int32, device="meta")

    def from_lines(batch=1, **kwargs):
        columns, offsets = (torch.zeros(batch, 1, c, dtype=torch.long) for c in (2, 1))
        return Layout.from_lines(columns, offsets, **lines, **kwargs)

    return [
        ("config-layer-str", lambda: config.planner("0"), ValueError, r"^layer: expected an int"),
        ("config-layer-negative", lambda: config.policy(-1), ValueError, r"^layer: "),
        (
            "selector-no-query-heads",
            lambda: tidal.select(torch.randn(1, 0, 32), cache.page_view(0), StepState()),
            ValueError,
            r"^q: expected \(B=1, a positive multiple of H_kv=2",
        ),
        (
            "selector-float64-query",
            lambda: tidal.select(torch.randn(1, 4, 32).double(), cache.page_view(0), StepState()),
            TypeError,
            r"^q: expected dtype in",
        ),
        (
            "line-block-mask-meta",
            lambda: api.line_block_mask(
                torch.zeros(1, 1, 3, dtype=torch.bool, device="meta"), None, band=16, **lines
            ),
            ValueError,
            r"^verticals: meta tensors",
        ),
        (
            "from-lines-no-batch",
            lambda: from_lines(batch=0),
            ValueError,
            r"^columns: a layout needs B >= 1 and H >= 1",
        ),
        (
            "from-lines-rows-int",
            lambda: from_lines(rows=3),
            TypeError,
            r"^rows: expected a callable",
        ),
        (
            "hand-built-no-heads",
            lambda: Layout(
                torch.zeros(1, 0, 3, 1, dtype=torch.int32),
                torch.zeros(1, 0, 3, dtype=torch.int32),
                16,
                16,
                40,
                48,
            ),
            ValueError,
            r"^block_idx: a layout needs B >= 1 and H >= 1",
        ),
        ("with-columns-meta", lambda: dense.with_columns(meta_idx), ValueError, r"^column_idx: "),
        (
            "with-columns-no-batch",
            lambda: dense.with_columns(torch.zeros(0, 1, dense.num_q_blocks, 1, dtype=torch.long)),
            ValueError,
            r"^column_idx: batch 0 does not broadcast",
        ),
        (
            "with-diagonals-no-heads",
            lambda: dense.with_diagonals(torch.zeros(1, 0, 1, dtype=torch.long)),
            ValueError,
            r"^offsets: heads 0 does not broadcast",
        ),
        (
            "with-spans-meta",
            lambda: dense.with_spans(meta_idx, meta_idx),
            ValueError,
            r"^start: meta",
        ),
        (
            "layout-dense-device",
            lambda: Layout.dense(40, 48, device="gpu"),
            ValueError,
            r"^device: expected an available device",
        ),
        ("layout-to-device", lambda: dense.to("gpu"), ValueError, r"^device: "),
        ("mask-rows-float", lambda: dense.mask_rows(0.5, 10), ValueError, r"^start: "),
        ("mask-rows-str", lambda: dense.mask_rows(0, "10"), ValueError, r"^stop: "),
        (
            "causal-block-mask-zero",
            lambda: Layout.causal_block_mask(40, 48, 0, 16),
            ValueError,
            r"^block_q: ",
        ),
        (
            "heads-for-not-a-multiple",
            lambda: Layout.dense(40, 48, heads=3).heads_for(4, 3),
            ValueError,
            r"^h_q: expected a multiple of h_kv=3, got 4",
        ),
        ("heads-for-float", lambda: dense.heads_for(2.5, 1), ValueError, r"^h_q: "),
        (
            "causal-block-mask-device",
            lambda: Layout.causal_block_mask(40, 48, 16, 16, "xyz"),
            ValueError,
            r"^device: expected an available device, got 'xyz'",
        ),
        (
            "dense-attention-sparse-mask",
            lambda: api.dense_attention(
                q, k, v, mask=torch.ones(N, M, dtype=torch.bool).to_sparse()
            ),
            TypeError,
            r"^mask: expected a dense \(strided\) tensor",
        ),
        (
            "from-block-mask-sparse",
            lambda: Layout.from_block_mask(
                torch.ones(1, 1, 3, 3, dtype=torch.bool).to_sparse(), **lines
            ),
            TypeError,
            r"^mask: expected a dense",
        ),
        (
            "from-topk-meta",
            lambda: Layout.from_topk(torch.zeros(1, 1, 3, 3, device="meta"), 1, **lines),
            ValueError,
            r"^scores: meta",
        ),
        (
            "mass-threshold-sparse-valid",
            lambda: api.mass_threshold(
                torch.rand(2, 3, 10), 0.5, torch.ones(2, 3, 10, dtype=torch.bool).to_sparse()
            ),
            TypeError,
            r"^valid: expected a dense",
        ),
        (
            "select-pages-sparse-count",
            lambda: api.select_pages(
                torch.randn(2, 2, 5), torch.ones(2, 2, dtype=torch.long).to_sparse(), 3
            ),
            TypeError,
            r"^count: expected a dense",
        ),
        (
            "pooled-sparse-k",
            lambda: api.pooled_block_probs(
                torch.randn(1, 4, 3, 32), torch.randn(1, 2, 3, 32).to_sparse(), **lines
            ),
            TypeError,
            r"^k_pooled: expected a dense",
        ),
    ]


def _review61_cases():
    """A review's probes of the sixty-first session: each was accepted before (silently used,
    cast, or read as truthy)."""
    from attnsieve.cache import Cache
    from attnsieve.cache_reference import ReferenceCache
    from attnsieve.kernels import prefill
    from attnsieve.methods.decode import DoubleSparsity, Quest

    tq = triton_qkv()
    lay = layout().to(TRITON_DEVICE)
    kernel = lambda **kw: prefill.sparse_attention(tq["q"], tq["k"], tq["v"], lay, **kw)  # noqa: E731
    caches = {
        kind: cls(2, 1, 2, 32, dtype=torch.float32, device="cpu")
        for kind, cls in (("paged", Cache), ("reference", ReferenceCache))
    }
    for cache in caches.values():
        cache.append(0, torch.randn(1, 2, 40, 32), torch.randn(1, 2, 40, 32))
    positions = torch.arange(32, 40).view(1, 8)
    view = caches["paged"].page_view(0)
    q = torch.randn(1, 4, 32)
    dense = layout()
    cases = [
        (f"kernel-{name}", lambda kw=kw: kernel(**kw), exc, pattern)
        for name, kw, exc, pattern in (
            ("scale-negative", {"scale": -1.0}, ValueError, r"^scale: expected a positive"),
            ("scale-str", {"scale": "2"}, TypeError, r"^scale: expected a positive"),
            ("causal-int", {"causal": 1}, TypeError, r"^causal: expected a bool"),
            ("causal-none", {"causal": None}, TypeError, r"^causal: expected a bool"),
            ("return-lse-int", {"return_lse": 1}, TypeError, r"^return_lse: expected a bool"),
            ("dense-dispatch-str", {"dense_dispatch": "no"}, TypeError, r"^dense_dispatch: "),
        )
    ]
    for kind, cache in caches.items():
        cases += [
            (
                f"kv-view-{kind}-float64-queries",
                lambda c=cache: c.kv_view(0, torch.randn(1, 4, 8, 32).double(), positions),
                TypeError,
                r"^queries: expected the cache's dtype torch.float32, got torch.float64",
            ),
            (
                f"kv-view-{kind}-position-below-minus-one",
                lambda c=cache: c.kv_view(0, torch.randn(1, 4, 8, 32), torch.full((1, 8), -7)),
                ValueError,
                r"^query_positions: expected positions >= 0, or -1 for an absent query",
            ),
        ]
    return cases + [
        ("block-mask-none", lambda: dense.block_mask(None), TypeError, r"^q_blocks: expected a "),
        ("block-mask-int", lambda: dense.block_mask(2), TypeError, r"^q_blocks: expected a slice"),
        (
            "quest-step-none",
            lambda: Quest(budget_tokens=16).select(q, view, None),
            TypeError,
            r"^step: expected a StepState, got NoneType",
        ),
        (
            "double-sparsity-step-none",
            lambda: DoubleSparsity(budget_tokens=16).select(q, view, None),
            TypeError,
            r"^step: expected a StepState, got NoneType",
        ),
    ]


CASES = (
    ATTENTION
    + SCALE_CASES
    + PLANNING
    + LAYOUT_OPS
    + PLANNERS
    + BAD_LAYOUT_CASES
    + LAYOUT
    + CONFIG
    + _cache_cases()
    + _decode_cases()
    + _edge_cases()
    + _review51_cases()
    + _review61_cases()
)
OPEN: set[str] = set()  # gaps not fixed yet
PARAMS = (
    [pytest.param(*c[1:], id=c[0]) for c in CASES]
    + [pytest.param(*c[1:4], id=c[0]) for c in GAPS if c[0] not in OPEN]
    + [
        pytest.param(*c[1:4], id=c[0], marks=pytest.mark.xfail(strict=True, reason=c[4]))
        for c in GAPS
        if c[0] in OPEN
    ]
)


def _check(call, exc, pattern):
    with pytest.raises(Exception) as info:  # noqa: B017  (the exact type is asserted below)
        call()
    assert type(info.value) is exc, f"{type(info.value).__name__}: {info.value}"
    assert re.search(pattern, str(info.value)), str(info.value)
    assert "\n" not in str(info.value).strip(), "one line"


@pytest.mark.parametrize(("call", "exc", "pattern"), PARAMS)
def test_malformed_input_is_named(call, exc, pattern):
    _check(call, exc, pattern)


def test_an_absent_device_is_one_line_whatever_torch_says(monkeypatch):
    """CUDA's bad-ordinal error runs to five lines (an H100 run, tests57/): its first is kept."""
    from attnsieve.checks import check_device

    def absent(*args, **kwargs):
        raise RuntimeError(
            "CUDA error: invalid device ordinal\nGPU device may be out of range, do you have "
            "enough GPUs?\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1\n"
        )

    monkeypatch.setattr(torch, "empty", absent)
    pattern = (
        r"^device: expected an available device, got 'cuda:7' "
        r"\(CUDA error: invalid device ordinal\)$"
    )
    _check(lambda: check_device("cuda:7"), ValueError, pattern)


@pytest.mark.parametrize(
    ("text", "exc", "pattern"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES]
)
def test_config_file_errors_name_the_file(tmp_path, text, exc, pattern):
    path = tmp_path / "cfg.json"
    if text is not None:
        path.write_text(text)
    _check(lambda: AttentionConfig.from_json(path), exc, pattern)
    _check(lambda: AttentionConfig.from_json(str(path)), exc, pattern)


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    """A UnicodeDecodeError is a ValueError: it escaped unnamed, and the CLI's rewrap of it as
    ``type(e)(message)`` failed ("function takes exactly 5 arguments")."""
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe{}")
    _check(
        lambda: AttentionConfig.from_json(path),
        ValueError,
        r"bin\.json: the config file is not UTF-8",
    )


def test_table_size():
    assert len(CASES) + len(FILE_CASES) >= 60


# ---- hand-built layouts: bad contents never reach a kernel -------------------------------------
@pytest.fixture
def kernel_calls(monkeypatch):
    """Records every call that reaches a prefill kernel (reference twin or Triton launcher)."""
    from attnsieve.kernels import prefill

    calls = []

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(
        api.prefill, "attention_reference", spy("reference", api.prefill.attention_reference)
    )
    monkeypatch.setattr(prefill, "sparse_attention", spy("triton", prefill.sparse_attention))
    return calls


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize(
    ("idx", "count", "cols", "ccount", "pattern"),
    [c[1:] for c in BAD_CONTENTS],
    ids=[c[0] for c in BAD_CONTENTS],
)
def test_bad_layout_contents_fail_before_any_kernel(
    backend, idx, count, cols, ccount, pattern, kernel_calls
):
    device = TRITON_DEVICE if backend == "triton" else "cpu"
    q, k, v = (t.to(device) for t in qkv(n=64, m=64))
    with pytest.raises(ValueError, match=pattern):
        attnsieve.attention(q, k, v, hand(idx, count, cols, ccount), backend=backend)
    assert kernel_calls == []
    # the spies see a valid layout: the check above is not vacuous
    attnsieve.attention(q, k, v, hand(GOOD_IDX, GOOD_COUNT).to(device), backend=backend)
    assert kernel_calls == [backend]


def test_valid_hand_built_layout_runs_alike_on_both_backends():
    q, k, v = (t.to(TRITON_DEVICE) for t in qkv(n=64, m=64))
    good = hand(GOOD_IDX, GOOD_COUNT, [[[[-1], [-1]]]], [[[0, 0]]]).to(TRITON_DEVICE)
    ref = attnsieve.attention(q, k, v, good, backend="reference").float()
    tri = attnsieve.attention(q, k, v, good, backend="triton").float()
    assert (tri - ref).norm() / ref.norm() < 4e-3


def test_replace_cannot_smuggle_bad_contents():
    good = Layout.dense(64, 64, block_q=32, block_k=32, causal=False)
    with pytest.raises(ValueError, match="block_idx"):
        replace(good, block_idx=torch.tensor([[[[1, 0], [5, 1]]]], dtype=I32))


# ---- density counts each computed pair once ---------------------------------------------------
@pytest.mark.parametrize("seed", range(12))
def test_density_is_the_exact_pair_count(seed):
    g = torch.Generator().manual_seed(seed)
    pick = lambda *xs: xs[int(torch.randint(len(xs), (1,), generator=g))]  # noqa: E731
    n, m = (
        int(torch.randint(1, 150, (1,), generator=g)),
        int(torch.randint(1, 150, (1,), generator=g)),
    )
    bq, bk = pick(16, 32, 64), pick(16, 32, 64)
    b, h = pick(1, 2), pick(1, 3)
    qb, kb = -(-n // bq), -(-m // bk)
    mask = torch.rand(b, h, qb, kb, generator=g) < torch.rand(1, generator=g)
    lay = Layout.from_block_mask(mask, block_q=bq, block_k=bk, num_queries=n, num_keys=m)
    # columns with repeats and inside chosen blocks: both dropped, so each pair is counted once
    cols = torch.randint(-1, m, (b, h, qb, 12), generator=g)
    cols[..., 6:] = cols[..., :6]
    lay = lay.with_columns(cols)
    assert lay.has_columns
    if seed % 2 and hasattr(Layout, "with_diagonals"):  # key spans too, where layouts have them
        lay = lay.with_diagonals(torch.randint(-1, m, (b, h, 3), generator=g))
    for causal in (True, False):
        pairs = lay.to_dense_mask(causal=causal).sum((-1, -2)).double()
        total = (n * m) if not causal else _causal_pairs(n, m)
        want = pairs / max(total, 1)
        torch.testing.assert_close(
            lay.density(causal=causal, reduce=False), want, rtol=0, atol=1e-12
        )


def _causal_pairs(n, m):
    i = torch.arange(n)
    return int((m - n + i + 1).clamp(0, m).sum())


def test_density_counts_columns_once_even_when_listed_twice():
    """with_columns drops repeats and columns inside chosen blocks; a hand-built layout holding
    either is rejected, so no constructor can double-count a pair."""
    lay = hand(GOOD_IDX, GOOD_COUNT)  # rows 0-31: block 0; rows 32-63: blocks 0, 1 (dense)
    once = lay.with_columns(torch.tensor([[[[40, 40, 5, -1], [-1, -1, -1, -1]]]]))
    assert once.column_count.tolist() == [[[1, 0]]] and once.column_idx[0, 0, 0, 0] == 40
    assert once.to_dense_mask().sum() == 32 * 32 + 32 * 64 + 32
    assert once.density(causal=False) == (32 * 32 + 32 * 64 + 32) / (64 * 64)
    with pytest.raises(ValueError, match="column_idx: .*increasing"):
        hand(GOOD_IDX, GOOD_COUNT, [[[[40, 40], [-1, -1]]]], [[[2, 0]]])
    with pytest.raises(ValueError, match="column_idx: .*disjoint"):
        hand(GOOD_IDX, GOOD_COUNT, [[[[5], [-1]]]], [[[1, 0]]])
    with pytest.raises(ValueError, match="block_idx: .*increasing"):
        hand([[[[0, 0], [0, 1]]]], [[[2, 2]]])


# ---- patch: the config is checked against the model --------------------------------------------
@pytest.fixture(scope="module")
def tiny_llama():
    return tiny_llama_of(head_dim=16)


def tiny_llama_of(head_dim):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim,
        max_position_embeddings=64,
    )  # fmt: skip
    return transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa").eval()


PATCH_CASES = [
    (
        "layer-beyond-model",
        lambda: AttentionConfig(layers={2: {"prefill": "dense"}}),
        ValueError,
        r"^layers\[2\]: the model has 2 layers",
    ),
    (
        "per-head-list-length",
        lambda: AttentionConfig(layers={1: {"prefill": ["dense"] * 3}}),
        ValueError,
        r"^layers\[1\]\['prefill'\]: 3 per-head entries, but the model has 4 query heads",
    ),
    (
        "default-per-head-list-length",
        lambda: AttentionConfig(prefill=["dense"] * 3),
        ValueError,
        r"^prefill \(layer 0\): 3 per-head entries, but the model has 4 query heads",
    ),
    (
        "per-head-budget-length",
        lambda: AttentionConfig(
            layers={1: {"prefill": {"method": "vertical_slash", "slash_size": [9, 9, 9]}}}
        ),
        ValueError,
        r"^layers\[1\]\['prefill'\]: slash_size: 3 per-head budgets, but the model plans 4 query",
    ),
    (
        "per-kv-head-budget-length",
        lambda: AttentionConfig(
            prefill={"method": "vertical_slash", "vertical_size": [5] * 4, "share_kv_group": True}
        ),
        ValueError,
        r"^prefill \(layer 0\): vertical_size: 4 per-head budgets, but the model plans 2 KV",
    ),
    (
        "per-head-gamma-length",
        lambda: AttentionConfig(layers={0: {"prefill": {"method": "flexprefill", "gamma": [0.9]}}}),
        ValueError,
        r"^layers\[0\]\['prefill'\]: gamma: 1 per-head values, but the model plans 4 query heads",
    ),
    ("config-not-config", lambda: {"prefill": "dense"}, TypeError, r"^config: expected an Attent"),
    (
        "tidaldecode-select-layer-beyond-model",
        lambda: AttentionConfig(decode={"method": "tidaldecode", "select_layer": 2}),
        ValueError,
        r"^decode \(layer 0\): select_layer: 2, but the model has 2 layers",
    ),
    (
        "head-dim-for-int8-fp8",
        lambda: AttentionConfig(precision="int8-fp8"),
        ValueError,
        r"^head_dim: the model's is 16, but INT8·FP8 prefill takes a power of two in \[32, 256\]",
    ),
    (
        "head-dim-for-the-paged-cache",
        lambda: AttentionConfig(kv={"method": "snapkv", "budget": 8}),
        ValueError,
        r"^head_dim: the model's is 24, but the paged cache's decode attention",
    ),
]


@pytest.mark.parametrize(
    ("config", "exc", "pattern"), [c[1:] for c in PATCH_CASES], ids=[c[0] for c in PATCH_CASES]
)
def test_patch_checks_the_config_against_the_model(tiny_llama, config, exc, pattern):
    if "paged cache" in pattern:  # a model whose heads the decode kernel cannot take
        tiny_llama = tiny_llama_of(head_dim=24)
    before = tiny_llama.config._attn_implementation
    _check(lambda: attnsieve.patch(tiny_llama, config()), exc, pattern)
    assert tiny_llama.config._attn_implementation == before  # nothing was patched
    with attnsieve.patch(tiny_llama, AttentionConfig(layers={1: {"prefill": ["dense"] * 4}})):
        pass  # the same shapes that fit the model are accepted


def test_patch_rejects_a_non_model():
    _check(lambda: attnsieve.patch(torch.nn.Linear(2, 2)), TypeError, r"^model: expected a trans")


def _bf16_dots():
    """Each Triton entry point that dots its bfloat16 input, called with bfloat16 q."""
    from attnsieve.kernels import antidiagonal, decode, planning, prefill

    q, k, v = qkv(torch.bfloat16)
    pages = torch.randn(4, 16, D).bfloat16()
    table = torch.arange(4, dtype=torch.int32).view(1, 1, 4).expand(B, HKV, 4).contiguous()
    lengths = torch.full((B, HKV), 40, dtype=torch.int32)
    return [
        lambda: prefill.sparse_attention(q, k, v, layout()),
        lambda: attn(backend="triton", q=q, k=k, v=v),
        lambda: decode.decode_attention(q[:, :, 0], pages, pages, table, lengths),
        lambda: planning.last_query_stats(q, k, last_q=16, block_k=16),
        lambda: antidiagonal.antidiagonal_block_scores(q, k, stride=4, block_q=16, block_k=16),
    ]


@pytest.mark.skipif(not INTERPRET, reason="Triton's interpreter only (TRITON_INTERPRET=1)")
@pytest.mark.parametrize("entry", range(5))
def test_interpreter_refuses_bfloat16_dots(entry):
    """Triton's interpreter gets bfloat16 dots wrong by orders of magnitude without an error, so
    the kernels that dot their input refuse bfloat16 there (float16 runs)."""
    _check(_bf16_dots()[entry], ValueError, r"^q: bfloat16 under Triton's interpreter")


def test_a_kwargs_key_given_twice_is_refused():
    """json keeps the last of two equal keys: --method-kwargs' first entry was dropped unnoticed."""
    from attnsieve.eval.sweep_args import planner_kwargs

    text = '{"streaming": {"sink_blocks": 2}, "streaming": {}}'
    pattern = r"^--method-kwargs: not JSON \(key 'streaming' given twice in one object\)"
    _check(lambda: planner_kwargs(text, "--method-kwargs", ["streaming"]), ValueError, pattern)
