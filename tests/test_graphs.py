"""CUDA graphs of plan + attention (attnsieve.integrations.graphs): plans that can be captured,
and (on a GPU) replays that equal eager runs."""

import warnings

import pytest
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode

from attnsieve.methods import PLANNERS, get_planner

# vertical_slash checks its span rows on the host (layout_spans), so it stays eager
CAPTURABLE = sorted(set(PLANNERS) - {"vertical_slash"})
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


PER_HEAD_GAMMA = {"gamma": [0.8, 0.85, 0.9, 0.95, 0.9, 1.0]}


@pytest.mark.parametrize(
    ("name", "fields"),
    [(name, {}) for name in CAPTURABLE] + [("flexprefill", PER_HEAD_GAMMA)],
)
def test_plans_have_no_data_dependent_host_step(name, fields):
    """Fake tensors have no values: any .item(), bool(tensor), nonzero or value-sized shape in a
    plan raises here, as it would wait for the GPU (and break a graph capture) there."""
    with FakeTensorMode():
        q, k = torch.randn(2, 6, 1100, 32), torch.randn(2, 2, 1100, 32)
        layout = get_planner(name, **fields).plan(q, k, causal=True)
        layout.density(causal=True, reduce=False).mean()


def test_a_host_step_is_detected():
    """The check above can fail: vertical_slash's span packing reads values on the host."""
    with FakeTensorMode(), pytest.raises(DataDependentOutputException):
        q, k = torch.randn(1, 2, 1100, 32), torch.randn(1, 2, 1100, 32)
        get_planner("vertical_slash").plan(q, k, causal=True)


@CUDA
def test_replays_read_new_inputs_and_write_the_caller_buffer():
    from attnsieve.integrations.graphs import PlanGraphs

    def call(q, k, v, out):
        out.copy_((q + k.sum(2, keepdim=True)).transpose(1, 2) * v.mean())
        return q.double().mean()  # Layout.density's dtype

    graphs = PlanGraphs()
    for step in range(5):
        q, k, v = (torch.randn(2, 3, 40, 16, device="cuda") + step for _ in range(3))
        out, expected = (
            torch.empty(2, 40, 3, 16, device="cuda"),
            torch.empty(2, 40, 3, 16, device="cuda"),
        )
        density = graphs.run(("toy",), "toy", call, q, k, v, out)
        assert torch.equal(density, call(q, k, v, expected))
        assert torch.equal(out, expected), step
    buffers = next(iter(graphs._buffers.values()))
    assert buffers.graphs[("toy",)] is not None  # captured at the second call, replayed after


@CUDA
def test_a_synchronising_call_warns_once_and_stays_eager():
    from attnsieve.integrations.graphs import PlanGraphs

    def call(q, k, v, out):
        out.copy_(q.transpose(1, 2) * float(k.max()))  # float(tensor) waits for the GPU
        return q.float().mean()

    graphs = PlanGraphs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):
            q, k, v = (torch.randn(1, 2, 8, 16, device="cuda") for _ in range(3))
            out, expected = (
                torch.empty(1, 8, 2, 16, device="cuda"),
                torch.empty(1, 8, 2, 16, device="cuda"),
            )
            graphs.run(("sync",), "sync", call, q, k, v, out)
            call(q, k, v, expected)
            assert torch.equal(out, expected)
    assert sum("cannot be captured" in str(w.message) for w in caught) == 1


@CUDA
@pytest.mark.parametrize(
    "entry",
    [{"method": "flexprefill"}, {"method": "xattention"}, {"method": "vertical_slash"},
     {"method": "flexprefill", "gamma": [0.8, 0.85, 0.9, 0.95]}],
    ids=["flexprefill", "xattention", "vertical_slash", "flexprefill-per-head-gamma"],
)  # fmt: skip
def test_a_patched_model_gives_the_same_logits_with_graphs(entry):
    """Three prefill forwards of a tiny Llama (two shapes, so graphs are captured and replayed
    for one and evicted from nothing): identical logits and densities with and without graphs."""
    transformers = pytest.importorskip("transformers")
    from attnsieve.integrations import AttentionConfig, patch

    config = transformers.LlamaConfig(
        vocab_size=128, hidden_size=256, intermediate_size=256, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, max_position_embeddings=4096,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).cuda().to(torch.bfloat16).eval()
    attn = AttentionConfig(prefill=entry, min_prefill_length=1)
    runs = {}
    for graphs in (False, True):
        logits, densities = [], []
        handle = patch(model, attn, cost=None, graphs=graphs)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            for n in (1500, 1500, 1500, 1100):
                ids = torch.randint(3, 128, (1, n), generator=torch.Generator().manual_seed(n))
                logits.append(model(input_ids=ids.cuda(), use_cache=False).logits)
                densities.append(handle.stats.density_per_layer)
            captured = handle.graphs.captured if graphs else 0
        handle.remove()
        runs[graphs] = logits, densities
    for eager, graphed in zip(*(runs[g][0] for g in (False, True)), strict=True):
        assert torch.equal(eager, graphed)
    assert runs[False][1] == runs[True][1]
    # one planner object serves every layer: one graph per shape seen at least twice
    assert captured == (0 if entry["method"] == "vertical_slash" else 2)


class _OnCuda(torch.Tensor):
    """A CPU tensor that says it is on CUDA: drives PlanGraphs' control flow without a GPU."""

    @property
    def is_cuda(self):
        return True


def _toy(q, k, v, out):
    out.copy_((q + k.sum(2, keepdim=True)).transpose(1, 2) * v.mean())
    return q.double().mean()


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda stubs on the CPU: a capture records the captured call, a replay re-runs it on the
    graph's static buffers (what a real replay computes); the sync debug mode is a flag that
    `waits_for_gpu` below turns into the error a real synchronisation raises."""
    import contextlib

    import attnsieve.integrations.graphs as graphs_module

    state = {"debug": 0, "capture": None, "fail_capture": False, "stream": None}

    class Graph:
        def replay(self):  # what the captured body does
            self.buffers.density.copy_(self.call(*self.buffers.inputs, self.buffers.out))

    @contextlib.contextmanager
    def on_stream(s):
        before, state["stream"] = state["stream"], s
        try:
            yield
        finally:
            state["stream"] = before

    @contextlib.contextmanager
    def graph(g, pool=None, stream=None):
        # as torch's: the capture stream is made current, and a capture whose end raises leaves
        # it current (its stream context is exited after capture_end)
        state["capture"], before, state["stream"] = g, state["stream"], stream
        yield
        if state["fail_capture"]:
            raise RuntimeError("operation not permitted when stream is capturing")
        state["stream"] = before

    class Stream:
        def __init__(self, *args, **kwargs):
            pass

        def wait_stream(self, other):
            pass

    cuda = torch.cuda
    for name, value in {
        "Stream": Stream, "stream": on_stream,
        "current_stream": lambda *a: Stream(), "device": lambda d: contextlib.nullcontext(),
        "synchronize": lambda *a: None, "graph_pool_handle": object,
        "is_current_stream_capturing": lambda: False, "CUDAGraph": Graph, "graph": graph,
        "get_sync_debug_mode": lambda: state["debug"],
        "set_sync_debug_mode": lambda m: state.update(debug=2 if m == "error" else m),
    }.items():  # fmt: skip
        monkeypatch.setattr(cuda, name, value)
    original = graphs_module.PlanGraphs._capture

    def capture(self, signature, key, name, call, *tensors):
        result = original(self, signature, key, name, call, *tensors)
        g = self._buffers[signature].graphs.get(key) if signature in self._buffers else None
        if g is not None:
            g.call, g.buffers = call, self._buffers[signature]
        return result

    monkeypatch.setattr(graphs_module.PlanGraphs, "_capture", capture)
    return state


@pytest.mark.parametrize("case", ["captured", "waits_for_gpu", "capture_fails"])
def test_graph_control_flow_on_stubs(fake_cuda, case):
    """Replays read each call's new inputs and write the caller's buffer; a call that waits for
    the GPU, or whose capture fails, warns once and runs eagerly from then on."""
    from attnsieve.integrations.graphs import PlanGraphs

    def waits(q, k, v, out):
        if fake_cuda["debug"] == 2:
            raise RuntimeError("called a synchronizing CUDA operation")
        return _toy(q, k, v, out)

    fake_cuda["fail_capture"] = case == "capture_fails"
    call = waits if case == "waits_for_gpu" else _toy
    graphs = PlanGraphs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(5):
            q, k, v = (torch.randn(2, 3, 40, 16).add(step).as_subclass(_OnCuda) for _ in range(3))
            out, want = torch.empty(2, 40, 3, 16).as_subclass(_OnCuda), torch.empty(2, 40, 3, 16)
            density = graphs.run(("toy",), case, call, q, k, v, out)
            plain = [t.as_subclass(torch.Tensor) for t in (q, k, v)]
            assert torch.equal(density.as_subclass(torch.Tensor), _toy(*plain, want)), step
            assert torch.equal(out.as_subclass(torch.Tensor), want), step
    assert graphs.captured == (case == "captured")
    assert graphs.eager == (set() if case == "captured" else {case})
    assert sum("cannot be captured" in str(w.message) for w in caught) == (case != "captured")
    # a shape left without a graph keeps no static copies (they stayed, a planner's that never
    # captures never evicted them); a failed capture leaves the caller's stream current
    assert len(graphs._buffers) == (case == "captured")
    assert fake_cuda["stream"] is None


def test_a_call_that_raises_during_capture_captures_at_the_next(fake_cuda):
    """An error other than a host wait (out of memory, say) while a shape is captured: it
    propagates, the shape keeps nothing, and its next call captures (it ran eagerly for good,
    without a warning, while the cost model priced it as a replay)."""
    from attnsieve.integrations.graphs import PlanGraphs

    calls = []

    def once_out_of_memory(q, k, v, out):
        calls.append(1)
        if len(calls) == 2:  # the capture's first run on the static buffers
            raise RuntimeError("CUDA out of memory")
        return _toy(q, k, v, out)

    graphs = PlanGraphs()
    q, k, v = (torch.randn(2, 3, 40, 16).as_subclass(_OnCuda) for _ in range(3))
    out = torch.empty(2, 40, 3, 16).as_subclass(_OnCuda)
    graphs.run(("toy",), "toy", once_out_of_memory, q, k, v, out)  # seen once: eager
    with pytest.raises(RuntimeError, match="out of memory"):
        graphs.run(("toy",), "toy", once_out_of_memory, q, k, v, out)
    assert not graphs._buffers and not graphs.eager
    graphs.run(("toy",), "toy", once_out_of_memory, q, k, v, out)
    assert graphs.captured == 1
