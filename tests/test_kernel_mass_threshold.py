"""The cumulative-mass threshold kernel vs its PyTorch twin (equal masks, ties included), in both
regimes (rows in registers; long rows in multi-program passes, forced with small blocks), what the
twin keeps (enough mass, minimal), edge rows, and the argument checks of `api.mass_threshold`
(TRITON_INTERPRET=1 on CPU).

Most data are multiples of 1/8 (or small integers): every sum is exact in float32, so the kernel's
and the twin's differently ordered sums agree and the masks must be identical, ties and all.
"""

import math

import pytest
import torch

from attnsieve import api
from attnsieve.kernels import mass_threshold, mass_threshold_reference

pytestmark = pytest.mark.usefixtures("nan_empty")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _poisoned_masks(nan_empty, monkeypatch):
    """uint8 memory from torch.empty reads 0xFF: a mask entry the kernel skips fails the check."""
    empty = torch.empty

    def poisoned(*args, **kwargs):
        t = empty(*args, **kwargs)
        return t.fill_(255) if t.dtype == torch.uint8 else t

    monkeypatch.setattr(torch, "empty", poisoned)


@pytest.fixture
def long_rows(monkeypatch):
    """The long-row search for rows over 64 entries: at most 4 chunks of 16 entries or more,
    loaded 32 at a time (chunks of 64+ in several loads), thresholds counted 2 rows at a time,
    zeros written 16 at a time. One program under the interpreter (it runs programs one after
    another); on a GPU as many as there are chunks, up to one an SM."""
    monkeypatch.setattr(mass_threshold, "_MAX_BLOCK", 64)
    monkeypatch.setattr(mass_threshold, "_MAX_CHUNKS", 4)
    monkeypatch.setattr(mass_threshold, "_MIN_CHUNK", 16)
    monkeypatch.setattr(mass_threshold, "_CHUNK", 32)
    monkeypatch.setattr(mass_threshold, "_SUB_WAYS", 16 * 16)
    monkeypatch.setattr(mass_threshold, "_BLOCK_R", 2)
    monkeypatch.setattr(mass_threshold, "_KEEP_BLOCK", 16)


def _probs(shape, kind):
    """float32 >= 0, exact to sum: "eighths" (k/8, k < 8: many ties and zeros) or "ints" (0..3:
    few levels); the first row is spiky (one entry holds most of its mass)."""
    p = torch.randint(0, 8, shape) / 8 if kind == "eighths" else torch.randint(0, 4, shape) * 1.0
    p.view(-1, shape[-1])[:1, 0] = 64.0
    return p.to(DEVICE)


def _check(probs, threshold, valid=None):
    got = mass_threshold.mass_threshold(probs, threshold, valid)
    want = mass_threshold_reference.mass_threshold(probs, threshold, valid)
    assert got.dtype == want.dtype == torch.bool and got.shape == probs.shape
    if got.numel():
        assert int(got.view(torch.uint8).max()) <= 1, "a mask entry was never written"
    assert torch.equal(got, want)
    return got


def _thresholds(lead):
    """Numbers in (0, 1), and a tensor per row holding 1, 0, a negative, NaN and fractions."""
    per_row = torch.tensor([0.5, 1.0, 0.0, -0.25, math.nan, 0.9, 0.3, 0.999, 1.5])
    rows = math.prod(lead)
    per_row = per_row.repeat(rows // per_row.numel() + 1)[:rows].view(*lead, 1)
    return [0.3, 0.9999, per_row.to(DEVICE)]


# (lead dims, L): one entry, odd lengths, a single warp's block, more than one register block;
# each kind of data on some of them (a row's bisection is the same code whatever its length)
SHORT = [
    ((2, 3), 1, "eighths"),
    ((5,), 7, "ints"),
    ((2, 3), 100, "eighths"),
    ((3,), 1000, "ints"),
    ((1, 2), 4097, "eighths"),
]


@pytest.mark.parametrize(("lead", "length", "kind"), SHORT)
def test_rows_in_registers_match_twin(lead, length, kind):
    probs = _probs((*lead, length), kind)
    valid = torch.rand(*lead, length, device=DEVICE) > 0.3
    _check(probs, 0.75)
    for threshold in _thresholds(lead):
        _check(probs, threshold, valid)


# L: 3 chunks of 32, the last one entry; 4 of 32 (the most a row has here); 3 of 64 and of 128,
# each loaded 32 entries at a time. The chunks are cut whatever the data: each chunking with
# one kind, eighths (more distinct sums) where a chunk takes several loads
LONG = [((3,), 65, "ints"), ((2,), 100, "ints"), ((2,), 190, "eighths"), ((2,), 281, "eighths")]


@pytest.mark.parametrize(("lead", "length", "kind"), LONG)
def test_long_rows_match_twin(long_rows, lead, length, kind):
    probs = _probs((*lead, length), kind)
    valid = torch.rand(*lead, length, device=DEVICE) > 0.3
    _check(probs, 0.9)
    _check(probs, _thresholds(lead)[-1], valid)


def test_long_rows_shared_among_programs(long_rows):
    """On a GPU more chunks than an H200 has SMs (140 rows of 3 chunks, some rows not searched):
    runs of 4 chunks that cross rows at 132 programs; under the interpreter, which runs one
    program, 6 rows, whose per-row thresholds give each kind of row: searched, kept whole, not
    searched (0, -0.25), NaN (its runs cross rows in every test). Then no row searched, every
    mask written as zeros."""
    rows = 140 if DEVICE == "cuda" else 6
    probs = _probs((rows, 65), "eighths")
    _check(probs, 0.7)
    _check(probs, _thresholds((rows,))[-1])
    assert not _check(probs, torch.zeros(rows, 1, device=DEVICE)).any()


@pytest.mark.skipif(DEVICE != "cuda", reason="programs that wait for each other: a GPU")
@pytest.mark.parametrize("sms", [2, 3, 5, 7, 13])
def test_long_rows_over_few_programs(long_rows, monkeypatch, sms):
    """As if the GPU had ``sms`` SMs (7 rows of 4 chunks): runs that start mid-row and cross
    rows, and (13) programs left without chunks, with a number and with per-row thresholds."""
    monkeypatch.setattr(mass_threshold, "sm_count", lambda _: sms)
    probs = _probs((7, 100), "eighths")
    _check(probs, 0.7)
    _check(probs, _thresholds((7,))[-1], torch.rand(7, 100, device=DEVICE) > 0.3)


def test_long_rows_first_searched_row_keeps_all(long_rows):
    """A program's first searched row has a threshold >= 1 (every valid entry kept) and the
    next ones do not."""
    probs = _probs((4, 100), "eighths")
    valid = torch.rand(4, 100, device=DEVICE) > 0.3
    _check(probs, torch.tensor([[0.0], [1.0], [0.5], [2.0]], device=DEVICE), valid)


def test_long_rows_programs_without_chunks(long_rows, monkeypatch):
    """Four programs, one with the only searched row's only chunk (it waits for itself alone,
    so the interpreter runs this too): the others write their shares of the zero rows."""
    monkeypatch.setattr(mass_threshold, "_MAX_CHUNKS", 1)
    monkeypatch.setattr(mass_threshold, "INTERPRET", False)
    monkeypatch.setattr(mass_threshold, "sm_count", lambda _: 4)
    threshold = torch.zeros(5, 1, device=DEVICE)
    threshold[2] = 0.6
    assert _check(_probs((5, 100), "eighths"), threshold)[2].any()


def test_long_rows_with_int64_offsets(long_rows, monkeypatch):
    """The int64 chunk offsets of rows of 2^31 entries or more (forced here) find the same t*."""
    monkeypatch.setattr(mass_threshold, "_WIDE_AT", 0)
    # 3 chunks of 64, 2 loads each: int64 offsets across chunks and within one (chunks of 128, 4
    # loads each, take the same steps)
    probs = _probs((3, 150), "eighths")
    _check(probs, 0.9)
    _check(probs, torch.tensor([[0.5], [0.99], [1.0]], device=DEVICE))


@pytest.mark.parametrize("long", [False, True])
def test_strided_and_broadcast_arguments(long, monkeypatch):
    if long:  # 2 chunks of 128 a row, each loaded 64 entries at a time, in 2 steps of 32
        monkeypatch.setattr(mass_threshold, "_MAX_BLOCK", 64)
        monkeypatch.setattr(mass_threshold, "_MIN_CHUNK", 128)
        monkeypatch.setattr(mass_threshold, "_CHUNK", 64)
        monkeypatch.setattr(mass_threshold, "_SUB_WAYS", 32 * 16)
    # (1, 3, 150), last dim strided: with batch 1 its rows stay a view that the kernel reads in
    # place (a batch of 2 made the launcher's reshape to rows copy them)
    probs = _probs((1, 150, 3), "eighths").transpose(1, 2)
    valid = torch.rand(150, device=DEVICE) > 0.2  # one mask for every row
    per_head = torch.tensor([0.2, 0.95, 1.0], device=DEVICE)[:, None]  # (3, 1)
    _check(probs, per_head, valid)
    _check(probs, torch.tensor(0.5, device=DEVICE), valid[None, None])
    _check(probs.double(), 0.5)  # computed in float32, as the twin


@pytest.mark.parametrize("long", [False, True])
def test_boundary_ties_are_all_kept(long, long_rows, monkeypatch):
    if not long:
        monkeypatch.setattr(mass_threshold, "_MAX_BLOCK", 8192)
    # total 10, target 6: 3 + 2 < 6 <= 3 + 2 + 2, so t* = 2 and all three 2s are kept
    row = torch.tensor([1.0, 2.0, 0.0, 3.0, 2.0, 2.0] * 1 + [0.0] * 94, device=DEVICE)
    got = _check(row[None], 0.6)
    assert got[0].nonzero().flatten().tolist() == [1, 3, 4, 5]
    # one entry more than needed, ties or not: 3 alone reaches 3 / 10
    assert _check(row[None], 0.3)[0].nonzero().flatten().tolist() == [3]
    # every entry equal: the whole row, whatever the threshold in (0, 1)
    assert _check(torch.full((2, 100), 0.125, device=DEVICE), 0.01).all()


@pytest.mark.parametrize("long", [False, True])
def test_threshold_resolves_the_last_bit(long, long_rows, monkeypatch):
    """Entries one float32 step apart (1 + 7, 6, 5 ulps): t* must be exact to the last bit."""
    if not long:
        monkeypatch.setattr(mass_threshold, "_MAX_BLOCK", 8192)
    a, b, c = torch.tensor([0x3F800007, 0x3F800006, 0x3F800005], dtype=torch.int32).view(
        torch.float32
    )
    row = torch.zeros(100)
    row[3], row[50], row[97] = c, a, b
    probs = torch.stack([row, row]).to(DEVICE)
    got = _check(probs, torch.tensor([[0.3], [0.5]], device=DEVICE))  # a; then a, b
    assert got.nonzero().tolist() == [[0, 50], [1, 50], [1, 97]]


@pytest.mark.parametrize("long", [False, True])
def test_edge_rows(long, long_rows, monkeypatch):
    if not long:
        monkeypatch.setattr(mass_threshold, "_MAX_BLOCK", 8192)
    probs = torch.rand(6, 65, device=DEVICE)  # long: 3 chunks of 32, the last one entry
    probs[0] = 0.0  # total 0: nothing, unless threshold >= 1
    probs[1, :50] = 0.0  # zeros kept only by threshold >= 1
    probs[2, 7] = math.nan  # a NaN total: nothing (threshold < 1)
    probs[3, 7] = math.nan  # ... but an invalid NaN counts as 0
    probs[4, 5] = math.inf  # an infinite total: the infinite entries
    probs[4, 9] = math.inf
    valid = torch.ones(6, 65, dtype=torch.bool, device=DEVICE)
    valid[3, 7] = valid[5] = False  # row 5: nothing valid
    for threshold in (1.0, 2.0):
        assert torch.equal(_check(probs, threshold, valid), valid)
    got = _check(probs, 0.5, valid)
    assert not got[0].any() and not got[2].any() and not got[5].any()
    assert got[3].any() and not got[3, 7]
    assert got[4].nonzero().flatten().tolist() == [5, 9]
    assert not _check(probs[1:2], 0.999)[0, :50].any()  # zeros never, short of threshold >= 1
    per_row = torch.tensor([0.0, -1.0, math.nan, 1.0, 0.5, 0.5], device=DEVICE)[:, None]
    got = _check(probs, per_row, valid)
    assert got.sum(-1).tolist()[:4] == [0, 0, 0, 64]


def test_empty_shapes():
    for shape in ((0, 5), (3, 0), (2, 0, 7)):
        assert _check(torch.rand(shape, device=DEVICE), 0.5).shape == shape


@pytest.mark.parametrize("kind", ["eighths", "ints"])
def test_twin_keeps_enough_mass_minimally(kind):
    """Kept mass >= threshold × total; dropping every entry equal to the smallest kept value
    leaves less (so no larger t* would do); and nothing above that value is left out."""
    probs = _probs((40, 57), kind)
    valid = torch.rand(40, 57, device=DEVICE) > 0.25
    p = probs * valid
    for threshold in (0.1, 0.5, 0.8, 0.95):
        keep = mass_threshold_reference.mass_threshold(probs, threshold, valid)
        target = threshold * p.sum(-1)  # sums of eighths: exact in any order
        for row, kept, need in zip(p, keep, target.tolist(), strict=True):
            if need <= 0:
                assert not kept.any()
                continue
            assert float(row[kept].sum()) >= need
            low = row[kept].min()
            assert float(row[kept & (row > low)].sum()) < need
            assert not (row[~kept] > low).any() and not (row[~kept & (row == low)]).any()
            assert (row[kept] > 0).all()


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_api_dispatch(backend):
    probs = _probs((2, 3, 90), "eighths")
    valid = torch.rand(2, 3, 90, device=DEVICE) > 0.5
    got = api.mass_threshold(probs, 0.7, valid, backend=backend)
    assert torch.equal(got, mass_threshold_reference.mass_threshold(probs, 0.7, valid))


def _args():
    return {"probs": torch.rand(2, 3, 10), "threshold": 0.5, "valid": None}


MALFORMED = [
    ({"probs": torch.ones(2, 3, dtype=torch.int32)}, TypeError, "probs"),
    ({"probs": [0.5, 0.5]}, TypeError, "probs"),
    ({"probs": torch.tensor(0.5)}, ValueError, "probs"),
    ({"threshold": True}, TypeError, "threshold"),
    ({"threshold": "0.5"}, TypeError, "threshold"),
    ({"threshold": torch.ones(2, 3, 1, dtype=torch.int64)}, TypeError, "threshold"),
    ({"threshold": torch.ones(2, 3, 10)}, ValueError, "threshold"),  # one per entry, not row
    ({"threshold": torch.ones(4, 1)}, ValueError, "threshold"),
    ({"valid": torch.ones(2, 3, 10)}, TypeError, "valid"),
    ({"valid": torch.ones(2, 10, dtype=torch.bool)}, ValueError, "valid"),
    ({"valid": torch.ones(1, 2, 3, 10, dtype=torch.bool)}, ValueError, "valid"),
    ({"backend": "fast"}, ValueError, "backend"),
]


@pytest.mark.parametrize(("change", "error", "name"), MALFORMED)
def test_malformed_input_is_named(change, error, name):
    with pytest.raises(error, match=f"^{name}:"):
        api.mass_threshold(**{**_args(), **change})


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_a_numpy_threshold_is_a_number(backend):
    """A NumPy float64 is a Python float: taken as its value on both backends (the reference
    had raised NotImplementedError from a torch op on it)."""
    np = pytest.importorskip("numpy")
    probs = torch.tensor([[0.5, 0.25, 0.125, 0.125]], device=DEVICE)
    got = api.mass_threshold(probs, np.float64(0.75), backend=backend)
    assert got.tolist() == api.mass_threshold(probs, 0.75, backend=backend).tolist()
    assert got.tolist() == [[True, True, False, False]]
