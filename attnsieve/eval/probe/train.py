"""Train the probe model on synthetic retrieval tasks plus Python source text, on one GPU.

    python -m attnsieve.eval.probe.train --out runs/probe --minutes 15 --session-minutes 8
    python -m attnsieve.eval.probe.train --out runs/probe --minutes 15 --session-minutes 8 --resume

``--minutes`` is the total training time over all sessions; a session stops after
``--session-minutes`` of wall clock, saves a checkpoint (sharded under 16 MiB per file) and exits 0;
``--resume`` carries on from it. When the total is spent, the model is saved in bf16 to
OUT/weights (safetensors, config, byte tokenizer), evaluated with greedy decoding on the NIAH
tasks at ``--eval-lengths`` (OUT/weights/niah_eval.json), checksummed (SHA256SUMS) and the
checkpoint is deleted. Progress goes to OUT/train.log.

What makes a tiny model learn retrieval quickly: most rows are task prompts whose loss is taken on
the answer (the continuation after the prompt, then EOS) with full weight and on the prompt with
a small weight (the repeated haystack teaches copying/induction); the rest of each row and 15 % of
rows are Python sources from site-packages with the plain LM loss. Lengths follow a curriculum
from 1024 tokens to ``--seq-len`` (reached at half the budget) with a constant token count per
step; the learning rate follows a cosine over the time budget. bf16 autocast on GPU, AdamW, SDPA.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import site
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from transformers import AutoModelForCausalLM

from attnsieve.eval.models import add_device_argument
from attnsieve.eval.probe import probe_config, write_checksums
from attnsieve.eval.probe.tokenizer import ByteTokenizer
from attnsieve.eval.tasks import TASKS, LengthTooShortError, answer_budget, make_samples
from attnsieve.integrations.generate import eos_token_ids, generate
from attnsieve.integrations.handle import PatchStats

MIXTURE = {  # row sources and their probabilities
    "niah_single": 0.20,
    "niah_multikey": 0.16,
    "niah_multivalue": 0.12,
    "niah_multiquery": 0.14,
    "passkey": 0.10,
    "variable_tracking": 0.07,
    "common_words": 0.03,
    "frequent_words": 0.03,
    "text": 0.15,
}
EVAL_TASKS = (
    "niah_single",
    "niah_multikey",
    "niah_multivalue",
    "niah_multiquery",
    "passkey",
    "variable_tracking",
)
IGNORE, CONTEXT, ANSWER = 0, 1, 2  # what the loss does with the token at a position
ANSWER_RESERVE = 96  # tokens kept free after a task prompt for its answer and EOS
SHARD_BYTES = 15 << 20  # checkpoint files stay under the device tool's 16 MiB per-file limit
TOK = ByteTokenizer()
log = logging.getLogger("attnsieve.probe.train")


def find_text_files(seed: int, limit: int = 50_000) -> list[str]:
    """Python sources (2 KiB - 512 KiB) of the installed packages, in a seeded order."""
    roots = sorted({sysconfig.get_paths()["purelib"], *site.getsitepackages()})
    files = []
    for root in roots:
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    files = [f for f in files if 2048 <= os.path.getsize(f) <= 1 << 19]
    random.Random(seed).shuffle(files)
    return files[:limit]


def length_ladder(seq_len: int) -> list[int]:
    return [n for n in (1024 << i for i in range(12)) if n < seq_len] + [seq_len]


def pick_length(ladder: list[int], progress: float, rng: random.Random) -> int:
    """Curriculum: the longest rung is reached at half the budget; a batch takes one of the
    three longest rungs unlocked so far, so shorter lengths are never forgotten."""
    top = min(len(ladder) - 1, int(progress * 2 * len(ladder)))
    return ladder[rng.randint(max(0, top - 2), top)]


class Batches(IterableDataset):
    """Endless (ids, kinds) batches of ``batch_tokens`` tokens; length from the curriculum at the
    progress the trainer shares through ``progress`` (a multiprocessing double)."""

    def __init__(
        self, seed: int, ladder: list[int], batch_tokens: int, text_files: list[str], progress
    ) -> None:
        super().__init__()
        self.seed, self.ladder, self.batch_tokens = seed, ladder, batch_tokens
        self.text_files, self.progress = text_files, progress
        self.sources = [s for s in MIXTURE if s != "text" or text_files]

    def __iter__(self):
        info = get_worker_info()
        rng = random.Random(f"{self.seed}|{info.id if info else 0}")
        while True:
            length = pick_length(self.ladder, self.progress.value, rng)
            rows = [self.row(rng, length) for _ in range(max(1, self.batch_tokens // length))]
            ids = torch.full((len(rows), length), TOK.pad_token_id, dtype=torch.int64)
            kinds = torch.full((len(rows), length), IGNORE, dtype=torch.uint8)
            for r, (row_ids, row_kinds) in enumerate(rows):
                ids[r, : len(row_ids)] = torch.tensor(row_ids)
                kinds[r, : len(row_kinds)] = torch.tensor(row_kinds, dtype=torch.uint8)
            yield ids, kinds

    def row(self, rng: random.Random, length: int) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        kinds: list[int] = []
        source = rng.choices(self.sources, [MIXTURE[s] for s in self.sources])[0]
        task_length = int(length * rng.uniform(0.6, 1.0)) - ANSWER_RESERVE
        if source != "text" and task_length > 0:
            try:
                # task_length already leaves ANSWER_RESERVE for the answer and EOS
                sample = make_samples(
                    source,
                    TOK,
                    task_length,
                    1,
                    rng.randrange(1 << 40),
                    depths=[rng.random()],
                    answer_room=False,
                )[0]
            except LengthTooShortError:  # short rungs cannot hold every template
                sample = None
            if sample is not None:
                prompt = TOK.encode(sample.prompt, add_special_tokens=False)
                answer = [*TOK.encode(sample.target, add_special_tokens=False), TOK.eos_token_id]
                ids = [TOK.bos_token_id, *prompt, *answer]
                kinds = [IGNORE] + [CONTEXT] * len(prompt) + [ANSWER] * len(answer)
        while len(ids) < length and self.text_files:  # the rest of the row: source files
            data = Path(rng.choice(self.text_files)).read_bytes()
            start = rng.randrange(max(1, len(data) - length))
            start = data.find(b"\n", start) + 1 if start else 0  # begin on a line
            chunk = list(data[start : start + length - len(ids) - 1])
            ids += [TOK.bos_token_id, *chunk]
            kinds += [IGNORE] + [CONTEXT] * len(chunk)
        return ids[:length], kinds[:length]


@dataclass
class State:
    step: int = 0
    train_seconds: float = 0.0
    tokens: int = 0
    sessions: int = 0


def progress_of(state: State, args: argparse.Namespace) -> float:
    by_time = state.train_seconds / (args.minutes * 60)
    return max(by_time, state.step / args.max_steps) if args.max_steps else by_time


def lr_at(state: State, progress: float, args: argparse.Namespace) -> float:
    warmup = min(1.0, (state.step + 1) / args.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return args.lr * warmup * (args.min_lr_ratio + (1 - args.min_lr_ratio) * cosine)


def make_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    groups = [
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    fused = args.device.startswith("cuda")
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), fused=fused)


def _param_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def save_checkpoint(directory: Path, model, optimizer, state: State) -> None:
    """fp32 weights + bf16 Adam moments (lossy but small), in shards under 16 MiB; atomic swap."""
    tensors = {f"model/{k}": v.detach().float().cpu() for k, v in model.state_dict().items()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    adam_step = 0.0
    for name, p in zip(_param_names(model, optimizer), params, strict=True):
        if p in optimizer.state:
            st = optimizer.state[p]
            adam_step = float(st["step"])
            for key in ("exp_avg", "exp_avg_sq"):
                tensors[f"{key}/{name}"] = st[key].detach().to(torch.bfloat16).cpu()
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shard: dict[str, torch.Tensor] = {}
    size, index = 0, 0
    for key in sorted(tensors):
        nbytes = tensors[key].numel() * tensors[key].element_size()
        if shard and size + nbytes > SHARD_BYTES:
            save_file(shard, tmp / f"ckpt-{index:02d}.safetensors")
            shard, size, index = {}, 0, index + 1
        shard[key], size = tensors[key].contiguous(), size + nbytes
    save_file(shard, tmp / f"ckpt-{index:02d}.safetensors")
    meta = {"state": asdict(state), "adam_step": adam_step}
    (tmp / "state.json").write_text(json.dumps(meta, indent=2) + "\n")
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(directory: Path, model, optimizer) -> State:
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("ckpt-*.safetensors")):
        tensors.update(load_file(path))
    meta = json.loads((directory / "state.json").read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    saved = optimizer.state_dict()  # param indices follow param_groups order
    saved["state"] = {
        i: {
            "step": torch.tensor(meta["adam_step"]),
            "exp_avg": tensors[f"exp_avg/{name}"].float(),
            "exp_avg_sq": tensors[f"exp_avg_sq/{name}"].float(),
        }
        for i, name in enumerate(_param_names(model, optimizer))
        if f"exp_avg/{name}" in tensors
    }
    optimizer.load_state_dict(saved)
    return State(**meta["state"])


def train_step(model, optimizer, ids, kinds, args) -> torch.Tensor:
    """Mean CE on answer tokens + ``context_weight`` x mean CE on context tokens; returns the
    (sum, count) of the answer and context CEs, for logging, without syncing the GPU."""
    with torch.autocast("cuda", torch.bfloat16, enabled=args.device.startswith("cuda")):
        logits = model(input_ids=ids, use_cache=False).logits
    ce = F.cross_entropy(
        logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten(), reduction="none"
    )
    kinds = kinds[:, 1:].flatten()
    answer_mask, context_mask = (kinds == ANSWER).float(), (kinds == CONTEXT).float()
    sums = torch.stack(
        [(ce * answer_mask).sum(), answer_mask.sum(), (ce * context_mask).sum(), context_mask.sum()]
    )
    answer, context = sums[0] / sums[1].clamp(min=1), sums[2] / sums[3].clamp(min=1)
    (answer + args.context_weight * context).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return sums.detach()


@torch.inference_mode()
def evaluate(weights: Path, args: argparse.Namespace) -> dict:
    """Greedy-decode accuracy of the exported model on the NIAH-style tasks, per length."""
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype, attn_implementation="sdpa")
    model = model.to(args.device).eval()
    accuracy: dict[str, dict[str, float]] = {}
    unpatched = PatchStats(0)  # dense SDPA model: no layer records a density
    for length in args.eval_lengths:
        accuracy[str(length)] = {}
        for task in args.eval_tasks:
            samples = make_samples(task, TOK, length, args.eval_samples, seed=0)
            scores = []
            for s in samples:
                budget = answer_budget(TOK, s.target)
                ids = torch.tensor([TOK.encode(s.prompt)], device=model.device)
                eos = eos_token_ids(model, TOK)
                tokens = generate(model, ids, budget, ids.shape[1], eos, unpatched)[0]
                text = TOK.decode([t for t in tokens if t not in eos], skip_special_tokens=True)
                scores.append(s.score(text))
            accuracy[str(length)][task] = sum(scores) / len(scores)
        log.info(
            "eval %6d tokens: %s",
            length,
            " ".join(f"{t}={a:.2f}" for t, a in accuracy[str(length)].items()),
        )
    return {"samples_per_cell": args.eval_samples, "seed": 0, "accuracy": accuracy}


def finish(model, out: Path, args: argparse.Namespace) -> None:
    weights = out / "weights"
    shutil.rmtree(weights, ignore_errors=True)
    model.to(torch.bfloat16).save_pretrained(weights)
    TOK.save_pretrained(weights)
    results = evaluate(weights, args)
    (weights / "niah_eval.json").write_text(json.dumps(results, indent=2) + "\n")
    write_checksums(weights)
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    size = (weights / "model.safetensors").stat().st_size
    log.info("saved %s (model.safetensors %.1f MB) and deleted the checkpoint", weights, size / 1e6)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m attnsieve.eval.probe.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="run folder: train.log, checkpoint/, weights/")
    p.add_argument("--minutes", type=float, default=15.0, help="total training time, all sessions")
    p.add_argument(
        "--session-minutes",
        type=float,
        help="stop this process after this long (checkpoint, exit 0); default: --minutes",
    )
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoint if present")
    p.add_argument("--max-steps", type=int, help="also end after this many steps (smoke tests)")
    p.add_argument("--seq-len", type=int, default=16384, help="longest training length")
    p.add_argument("--batch-tokens", type=int, default=131072, help="tokens per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument(
        "--context-weight",
        type=float,
        default=0.2,
        help="loss weight of prompt/text tokens relative to answer tokens",
    )
    add_device_argument(p)
    p.add_argument(
        "--workers", type=int, help="data workers (default: min(12, CPUs - 2) on GPU, 0 on CPU)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25, help="steps between log lines")
    p.add_argument("--checkpoint-minutes", type=float, default=3.0)
    p.add_argument("--eval-lengths", default="4096,8192,16384")
    p.add_argument("--eval-samples", type=int, default=10, help="samples per task and length")
    p.add_argument("--eval-tasks", default=",".join(EVAL_TASKS))
    args = p.parse_args(argv)
    args.eval_lengths = [int(x) for x in args.eval_lengths.split(",")]
    args.eval_tasks = args.eval_tasks.split(",")
    if any(task not in TASKS for task in args.eval_tasks):
        p.error(f"--eval-tasks must name tasks among {sorted(TASKS)}")
    for name in ("minutes", "seq_len", "batch_tokens", "lr", "warmup_steps", "eval_samples"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be > 0")
    if args.session_minutes is None:
        args.session_minutes = args.minutes
    if args.workers is None:
        args.workers = min(12, (os.cpu_count() or 4) - 2) if args.device.startswith("cuda") else 0
    return args


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one linear training script
    started = time.monotonic()
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        force=True,
        handlers=[logging.FileHandler(out / "train.log"), logging.StreamHandler()],
    )
    ckpt = out / "checkpoint"
    if (out / "weights" / "niah_eval.json").exists() and not ckpt.exists():
        log.info("%s already holds trained weights; nothing to do", out)
        return 0
    if ckpt.exists() and not args.resume:
        log.error("%s exists: pass --resume to continue it, or use another --out", ckpt)
        return 2
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    model = AutoModelForCausalLM.from_config(probe_config(), attn_implementation="sdpa")
    model = model.to(args.device).train()
    optimizer = make_optimizer(model, args)
    state = load_checkpoint(ckpt, model, optimizer) if ckpt.exists() else State()
    state.sessions += 1
    log.info(
        "session %d from step %d (%.0f s trained) | %.2fM params | device %s | torch %s | args %s",
        state.sessions,
        state.step,
        state.train_seconds,
        sum(p.numel() for p in model.parameters()) / 1e6,
        args.device,
        torch.__version__,
        vars(args),
    )
    files = find_text_files(args.seed)
    log.info("%d Python source files for text rows", len(files))
    progress = torch.multiprocessing.Value("d", progress_of(state, args), lock=False)
    data = Batches(
        args.seed * 1000 + state.sessions,
        length_ladder(args.seq_len),
        args.batch_tokens,
        files,
        progress,
    )
    loader = DataLoader(
        data,
        batch_size=None,
        num_workers=args.workers,
        pin_memory=args.device.startswith("cuda"),
        persistent_workers=args.workers > 0,
    )
    batches = iter(loader)
    window_sums = torch.zeros(4, device=args.device)
    window_tokens, window_start = 0, time.monotonic()
    last_ckpt = tick = time.monotonic()
    while (p := progress_of(state, args)) < 1:
        progress.value = p
        ids, kinds = next(batches)
        ids = ids.to(args.device, non_blocking=True)
        kinds = kinds.to(args.device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(state, p, args)
        window_sums += train_step(model, optimizer, ids, kinds, args)
        state.step, state.tokens = state.step + 1, state.tokens + ids.numel()
        window_tokens += ids.numel()
        now = time.monotonic()
        state.train_seconds, tick = state.train_seconds + now - tick, now
        last = progress_of(state, args) >= 1
        if state.step % args.log_every == 0 or state.step == 1 or last:
            sums = window_sums.tolist()  # syncs the GPU, so tok/s is honest
            answer_mean, context_mean = sums[0] / max(sums[1], 1), sums[2] / max(sums[3], 1)
            now = time.monotonic()
            log.info(
                "step %6d | progress %.3f | len %5d x %3d | loss answer %.4f context %.4f | "
                "lr %.2e | %.0f tok/s | trained %.0f s",
                state.step,
                p,
                ids.shape[1],
                ids.shape[0],
                answer_mean,
                context_mean,
                optimizer.param_groups[0]["lr"],
                window_tokens / (now - window_start),
                state.train_seconds,
            )
            if not math.isfinite(answer_mean + context_mean):
                log.error("non-finite loss at step %d; the last checkpoint is kept", state.step)
                return 3
            window_sums.zero_()
            window_tokens, window_start = 0, now
        if now - last_ckpt > args.checkpoint_minutes * 60:
            save_checkpoint(ckpt, model, optimizer, state)
            last_ckpt = tick = time.monotonic()
        if now - started > args.session_minutes * 60 and progress_of(state, args) < 1:
            save_checkpoint(ckpt, model, optimizer, state)
            log.info(
                "session time is up at step %d (%.0f of %.0f s trained); checkpoint in %s; "
                "run again with --resume",
                state.step,
                state.train_seconds,
                args.minutes * 60,
                ckpt,
            )
            return 0
    save_checkpoint(ckpt, model, optimizer, state)  # lets a failed export be retried with --resume
    log.info(
        "training done: %d steps, %.0f M tokens, %.0f s",
        state.step,
        state.tokens / 1e6,
        state.train_seconds,
    )
    finish(model, out, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
