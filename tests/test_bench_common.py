"""`attnsieve.bench.common`: what runs without a GPU."""

import pytest

from attnsieve.bench.common import graph_ms


def test_graph_ms_names_an_unknown_flush():
    with pytest.raises(ValueError, match="flush: expected one of"):
        graph_ms(lambda: None, 1, flush="cold")
