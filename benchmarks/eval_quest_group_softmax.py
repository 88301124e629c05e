"""`attnsieve ARGS...` with Quest ranking pages by its per-head bounds' softmax summed over the
GQA group in place of the max of its bounds (`Quest.select` replaced), the ranking
`benchmarks/quest_page_recall.py` calls quest_group_softmax. A prototype for one eval run:

    PYTHONPATH=. python3 benchmarks/eval_quest_group_softmax.py eval --decode quest ...
"""

import math
import sys

import torch

from attnsieve.api import select_pages
from attnsieve.cli import main
from attnsieve.methods.decode import quest as qm
from attnsieve.methods.decode.base import Pages, check_query, last_page, weighted_pages


def select(self, q, view, step):
    check_query(q, view, step)
    if (width := self.width(view)) is None:
        return None
    b, h, p = view.page_table.shape
    d = q.shape[-1]
    g = q.shape[1] // h
    rows = view.page_table.long().clamp(min=0)
    lo, hi = view.key_min_pool[rows].float(), view.key_max_pool[rows].float()  # (b, h, p, d)
    qq = q.float().view(b, h, g, 1, d)
    bound = torch.maximum(qq * lo[:, :, None], qq * hi[:, :, None]).sum(-1)  # (b, h, g, p)
    valid = torch.arange(p, device=q.device) < view.page_count[..., None]
    scale = view.scale if view.scale is not None else d**-0.5
    probs = (bound * scale).masked_fill(~valid[:, :, None], -math.inf).softmax(-1).nan_to_num(0.0)
    score = probs.sum(2).masked_fill(~valid, -math.inf).masked_fill(last_page(view), math.inf)
    if (heavy := weighted_pages(view)) is not None:
        score = score.masked_fill(heavy & ~last_page(view), torch.finfo(score.dtype).max)
    return Pages(*select_pages(score, self.page_targets(view), width))


qm.Quest.select = select
raise SystemExit(main(sys.argv[1:]))
