"""`attnsieve.bench.common`: what runs without a GPU."""

import math

import pytest
import torch

from attnsieve.bench.common import environment, graph_ms, next_token_kl, rel_err, write_json


def test_environment_names_the_run_device_not_the_machine_gpu(monkeypatch):
    def no_gpu_read(device):
        raise AssertionError(f"read the properties of {device} for a CPU run")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", no_gpu_read)
    env = environment("cpu")
    assert env["device"] == "cpu" and env["sm_count"] is None


def test_graph_ms_names_an_unknown_flush():
    with pytest.raises(ValueError, match="flush: expected one of"):
        graph_ms(lambda: None, 1, flush="cold")


BAD_OPTIONS = [
    ("decode", ["--keep", "0"], "--keep"),
    ("decode", ["--reps", "0"], "--reps"),
    ("decode", ["--reps", "-3"], "--reps"),
    ("decode", ["--lengths", "0"], "--lengths"),
    ("decode", ["--lengths", ","], "--lengths"),
    ("decode", ["--batch", "0,8"], "--batch"),
    ("decode", ["--heads", "0"], "--heads"),
    ("decode", ["--kv-heads", "0"], "--kv-heads"),
    ("decode", ["--head-dim", "0"], "--head-dim"),
    ("decode", ["--page-size", "12"], "--page-size"),
    ("decode", ["--seed", "-1"], "--seed"),
    ("decode", ["--heads", "6"], "--kv-heads"),
    ("kernels", ["--densities", "0.1,0"], "--densities"),
    ("kernels", ["--densities", "nan"], "--densities"),
    ("kernels", ["--densities", "1.5"], "--densities"),
    ("kernels", ["--rep-ms", "nan"], "--rep-ms"),
    ("kernels", ["--rep-ms", "inf"], "--rep-ms"),
    ("kernels", ["--rep-ms", "0"], "--rep-ms"),
    ("kernels", ["--block", "96"], "--block"),
    ("kernels", ["--block", "0"], "--block"),
    ("kernels", ["--batch", "0"], "--batch"),
    ("kernels", ["--quant-density", "nan"], "--quant-density"),
    ("kernels", ["--quant-lengths", "0"], "--quant-lengths"),
    ("kernels", ["--quant-sparse-lengths", "-1"], "--quant-sparse-lengths"),
    ("kernels", ["--lengths", ""], "--lengths"),
    ("kernels", ["--heads", "12"], "--kv-heads"),
    ("prefill", ["--recall-blocks", "0"], "--recall-blocks"),
    ("prefill", ["--rep-ms", "nan"], "--rep-ms"),
    ("prefill", ["--lengths", "0"], "--lengths"),
    ("prefill", ["--kv-heads", "0"], "--kv-heads"),
    ("prefill", ["--seed", str(2**64)], "--seed"),
    ("prefill", ["--kinds", ","], "--kinds"),
    ("prefill", ["--heads", "4", "--kv-heads", "3"], "--kv-heads"),
    ("e2e", ["--seed", "-1"], "--seed"),
    ("e2e", ["--rope-scale", "nan"], "--rope-scale"),
    ("e2e", ["--rope-scale", "0.5"], "--rope-scale"),
    ("e2e", ["--repeats", "0"], "--repeats"),
    ("e2e", ["--layers", "0"], "--layers"),
]


@pytest.mark.parametrize("command, argv, name", BAD_OPTIONS)
def test_bad_numeric_options_exit_2_naming_them(command, argv, name, capsys, tmp_path):
    """A value that would crash a benchmark or give NaN times (--keep 0 divided by zero, --reps 0
    took the median of no replays) is refused before anything runs, with or without a GPU."""
    from attnsieve import cli

    assert cli.main(["bench", command, *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"attnsieve bench {command}: error: ")
    assert name in err[0]
    assert not list(tmp_path.iterdir())


def test_line_plots_never_repeat_a_colour_and_style(monkeypatch, tmp_path):
    """Past matplotlib's ten default colours two series of a panel shared one (seen in a bench
    decode plot of 14 series); reference lines are drawn with their labels."""
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    from attnsieve.bench.common import save_line_plots

    drawn, lines = [], []
    plot, axhline = matplotlib.axes.Axes.plot, matplotlib.axes.Axes.axhline

    def record(ax, *args, **kwargs):
        drawn.append((kwargs["color"], kwargs["ls"]))
        return plot(ax, *args, **kwargs)

    def record_line(ax, y, **kwargs):
        lines.append((y, kwargs["label"]))
        return axhline(ax, y, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", record)
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", record_line)
    for count in (7, 14, 25):
        drawn.clear()
        series = {f"s{i}": ([1, 2], [i, i + 1]) for i in range(count)}
        panel = {"series": series, "xlabel": "x", "ylabel": "y", "hlines": {"copy": 3.0}}
        assert save_line_plots(tmp_path / f"{count}.png", [panel], "t").exists()
        assert len(set(drawn)) == count
    assert lines == [(3.0, "copy")] * 3


def test_a_median_takes_at_least_five_calls(monkeypatch):
    """do_bench times max(1, rep / estimate) calls: a 250 ms kernel at rep 200 ms was one call,
    reported as a median. Calls that long are now timed five times directly; shorter ones go
    through do_bench with the time budget asked for."""
    import triton.testing

    from attnsieve.bench import common

    reps, direct = [], []
    monkeypatch.setattr(
        triton.testing, "do_bench", lambda fn, warmup, rep, return_mode: reps.append(rep) or 1.0
    )
    monkeypatch.setattr(common, "_median_of_calls", lambda fn, calls: direct.append(calls) or 2.0)
    monkeypatch.setattr(common, "call_ms", lambda fn: 250.0)
    assert common.median_ms(lambda: None, rep_ms=200) == 2.0
    assert direct == [common.MIN_CALLS] and reps == []
    monkeypatch.setattr(common, "call_ms", lambda fn: 30.0)  # 6 calls in 200 ms, 5 with margin
    assert common.median_ms(lambda: None, rep_ms=200) == 1.0
    assert reps == [200] and direct == [common.MIN_CALLS]


def test_long_calls_are_timed_between_events_each_after_the_flush(monkeypatch):
    """The direct path of `median_ms`: every call sits between its own pair of events, the L2
    flush before the first of them, and the median is taken once the device has synchronised."""
    from attnsieve.bench import common

    log = []

    class Event:
        def __init__(self, enable_timing):
            assert enable_timing
            self.at = None

        def record(self):
            self.at = len(log)
            log.append("event")

        def elapsed_time(self, end):
            assert "sync" in log, "read before the synchronisation"
            return float(end.at - self.at) * {1: 3.0, 5: 1.0, 9: 1.5}[self.at]

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: log.append("sync"))
    real_zero = torch.Tensor.zero_
    monkeypatch.setattr(torch.Tensor, "zero_", lambda t: log.append("flush") or real_zero(t))
    assert (
        common._median_of_calls(lambda: log.append("call"), 3, device="cpu") == 3.0
    )  # of 6, 2, 3 ms
    assert log == ["flush", "event", "call", "event"] * 3 + ["sync"]


def test_ints_keep_one_of_each_value():
    """bench kernels' and bench decode's speed-ups key rows on the length (and batch): a length
    given twice took the last row's baseline for both."""
    from attnsieve.bench.common import fractions, ints

    assert ints("4096,1024,4096") == [4096, 1024]
    assert fractions("0.5,0.1,0.5") == [0.5, 0.1]  # densities: vs_flex keys on them too


def test_sampled_blocks_leave_out_the_first_unless_all_are_taken():
    """Evenly spaced from block 0, the sample always held the first query block, whose recall is
    about 1 under every planner: at 8 of 1024 blocks an eighth of the estimate."""
    from attnsieve.bench.common import sampled_blocks
    from attnsieve.layout import Layout

    layout = Layout.dense(32 * 16, 32 * 16, block_q=16, block_k=16)
    firsts = [r0 // 16 for r0, _, _ in sampled_blocks(layout, 4)]
    assert firsts == [4, 12, 20, 28]  # the middles of four equal parts
    assert [r0 // 16 for r0, _, _ in sampled_blocks(layout, 64)] == list(range(32))


@pytest.mark.parametrize("command", ["e2e", "prefill", "decode", "kernels"])
@pytest.mark.parametrize("under", [False, True])
def test_an_out_that_is_no_folder_is_refused_before_the_benchmark(
    command, under, tmp_path, capsys, monkeypatch
):
    """Results are written at the end: an --out that is a file, or under one, failed there with a
    bare [Errno 17] after the whole benchmark had run."""
    import importlib

    from attnsieve import cli

    afile = tmp_path / "afile"
    afile.write_text("")
    module = importlib.import_module(f"attnsieve.bench.{command}")
    monkeypatch.setattr(module, "require_cuda", lambda: pytest.fail("checked after the GPU"))
    assert cli.main(["bench", command, "--out", str(afile / "sub" if under else afile)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"attnsieve bench {command}: error: --out: expected a folder (made if missing); {afile} "
        "is not a folder"
    ]


@pytest.mark.parametrize("command", ["e2e", "prefill", "decode", "kernels"])
def test_an_empty_out_is_refused(command, capsys):
    """--out '' read as the working folder, where the results went unasked."""
    from attnsieve import cli

    assert cli.main(["bench", command, "--out", ""]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"attnsieve bench {command}: error: argument --out: expected a folder, got ''"
    ]


def test_a_missing_out_is_left_to_be_made(tmp_path):
    from attnsieve.bench.common import check_out

    check_out(tmp_path / "a" / "b")
    assert not list(tmp_path.iterdir())


def test_an_out_the_system_cannot_make_is_refused_before_the_run():
    """An access test passed root under /proc, where no folder can be made: eval, bench and the
    demo ran to the end and failed writing their results."""
    from attnsieve.bench.common import check_out

    with pytest.raises(ValueError, match="^--out: cannot make the folder /proc/attnsieve-out"):
        check_out("/proc/attnsieve-out")


@pytest.mark.parametrize("command", ["decode", "prefill"])
def test_a_head_dim_the_kernels_do_not_take_is_refused(command, capsys, monkeypatch):
    """bench decode exited 1 with nothing on stderr (every row's kernel call failed), bench
    prefill failed only in the kernel: both after the GPU work."""
    import importlib

    from attnsieve import cli

    module = importlib.import_module(f"attnsieve.bench.{command}")
    monkeypatch.setattr(module, "require_cuda", lambda: pytest.fail("checked after the GPU"))
    assert cli.main(["bench", command, "--head-dim", "1000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"attnsieve bench {command}: error: argument --head-dim: expected a power of two in "
        "[16, 256], got '1000'"
    )


def test_write_json_never_leaves_a_truncated_file(tmp_path, monkeypatch):
    """Results files are written again after every row: a run killed mid-write (here the write is
    cut halfway) keeps the previous whole file, not a truncated one."""
    import json
    from pathlib import Path

    path = write_json(tmp_path / "r.json", {"rows": [1]})
    write_text = Path.write_text

    def cut(self, text, *args, **kwargs):
        write_text(self, text[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", cut)
    with pytest.raises(KeyboardInterrupt):
        write_json(path, {"rows": [1, 2]})
    assert json.loads(path.read_text()) == {"rows": [1]}


def test_written_results_have_a_plain_file_s_mode(tmp_path):
    """The temporary file's private mode (0600) reached results.json and results.csv, where the
    PNGs beside them were readable by all: the umask's mode now, as for any new file."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    path = write_json(tmp_path / "r.json", {"rows": [1]})
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_write_json_without_a_default_refuses_what_json_cannot_hold(tmp_path):
    """eval's results.json stays strict (a Tensor in a cell is a TypeError, not its str), and the
    failed write leaves no temporary file beside the old one."""
    path = write_json(tmp_path / "r.json", {"rows": [1]})
    with pytest.raises(TypeError):
        write_json(path, {"rows": [torch.zeros(1)]}, default=None)
    assert path.read_text() == '{\n  "rows": [\n    1\n  ]\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_next_token_kl_ignores_a_shift_that_rel_err_counts():
    """KL(ref || out) of the next-token distributions: zero for a common shift of the logits,
    which softmax ignores (rel_err does not), the closed form on two tokens, averaged over rows,
    and finite where the reference rules a token out."""
    ref = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    assert next_token_kl(ref + 7.0, ref) == pytest.approx(0.0, abs=1e-6)
    assert rel_err(ref + 7.0, ref) > 1.0
    p, q = torch.tensor([0.8, 0.2]), torch.tensor([0.5, 0.5])
    want = float((p * (p / q).log()).sum())
    assert next_token_kl(q.log(), p.log()) == pytest.approx(want, rel=1e-5)
    rows = torch.stack([p.log(), p.log()]), torch.stack([q.log(), p.log()])
    assert next_token_kl(rows[1], rows[0]) == pytest.approx(want / 2, rel=1e-5)
    ruled_out, out = torch.tensor([0.0, -math.inf, 1.0]), torch.tensor([0.0, -5.0, 1.0])
    kept = torch.tensor([0, 2])
    p, q = ruled_out.softmax(-1)[kept], out.softmax(-1)[kept]
    want = float((p * (p / q).log()).sum())
    assert math.isfinite(want) and next_token_kl(out, ruled_out) == pytest.approx(want, rel=1e-3)


def test_sdpa_choice_names_the_backend_pytorch_picks():
    """bench decode's SDPA baseline and bench e2e's name the kernel they were timed against."""
    from torch.nn.attention import SDPBackend

    from attnsieve.bench.common import sdpa_choice

    q, k = torch.zeros(1, 4, 1, 64), torch.zeros(1, 2, 16, 64)
    assert sdpa_choice(q, k, k, enable_gqa=True) in SDPBackend.__members__
    assert sdpa_choice(q, k, k, enable_gqa="yes").startswith("unknown (")


def test_results_paths_keep_a_name_whole_and_cut_a_long_one(tmp_path):
    """A run's results are named by its labels: one holding a dot ("quest@0.125") lost its end to
    Path.with_suffix, and a sweep's many labels need a name a file system takes (255 bytes), each
    configuration its own."""
    from attnsieve.bench.common import STEM_BYTES, results_paths

    stem = "e2e_decode_m_dense+quest@0.125"
    assert results_paths(tmp_path, stem) == (tmp_path / f"{stem}.json", tmp_path / f"{stem}.png")
    long = "e2e_decode_m_" + "-".join(f"dense+snapkv@0.{i}+quest@0.125" for i in range(1, 10))
    paths = [results_paths(tmp_path, name) for name in (long, long + "_nographs", "é" * 150)]
    assert len({p.stem for p, _ in paths}) == 3
    for json_path, png_path in paths:
        assert len(json_path.stem.encode()) <= STEM_BYTES and png_path.stem == json_path.stem
        write_json(json_path, {"rows": []})  # with write_json's temporary name beside it
    assert paths[0][0].name.startswith(long[:100])


def test_copies_are_timed_at_new_addresses_and_the_median_reported(monkeypatch):
    """`median_ms_over_copies`: every copy is a clone with the inputs' values at new addresses,
    all earlier ones still alive while the next is timed (so that it cannot reuse their memory);
    the time is the median of the copies' medians, and each is returned."""
    import weakref

    from attnsieve.bench import common

    inputs = [torch.randn(2, 3), torch.arange(3.0)]
    placed, times = [], iter([4.0, 1.0, 9.0, 2.0, 3.0])

    def fake_median(call, rep_ms):
        assert rep_ms == 50
        assert all(ref() is not None for refs in placed for ref in refs), "a copy was freed"
        assert all(a.data_ptr() != b.data_ptr() for a, b in zip(call.args, inputs, strict=True))
        assert all(torch.equal(a, b) for a, b in zip(call.args, inputs, strict=True))
        assert torch.equal(call(), torch.add(*inputs, alpha=2))
        placed.append([weakref.ref(t) for t in call.args])
        return next(times)

    monkeypatch.setattr(common, "median_ms", fake_median)
    ms, each = common.median_ms_over_copies(common.on_inputs(torch.add, alpha=2), inputs, 5, 50)
    assert (ms, each) == (3.0, [4.0, 1.0, 9.0, 2.0, 3.0]) and len(placed) == 5


def test_copies_that_do_not_fit_are_an_error_row(monkeypatch):
    """Out of GPU memory while the copies are timed (after the row passed its check): the row says
    so and has no time, and the bench goes on."""
    from attnsieve.bench import common

    def out_of_memory(call, rep_ms):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(common, "median_ms", out_of_memory)
    row = {}
    assert not common.time_on_copies(row, common.on_inputs(torch.neg), [torch.ones(2)], 3, 1.0)
    assert row == {"status": "error: out of memory holding 3 copies of the inputs (--copies)"}
    monkeypatch.setattr(common, "median_ms", lambda call, rep_ms: float(call()[0]))
    assert common.time_on_copies(row, common.on_inputs(torch.neg), [torch.ones(2)], 3, 1.0)
    assert row == {"status": "ok", "ms": -1.0, "copies_ms": [-1.0, -1.0, -1.0]}
