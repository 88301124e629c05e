"""Does SmolLM2-135M-Instruct answer `attnsieve eval`'s task prompts better inside its chat
template? The same samples, dense attention, as plain text (what eval feeds) and as one user turn
whose answer prefix ("The pass key is", "Answer: ...") opens the assistant's turn, as RULER does
for chat models. CPU is enough at 2K.

    PYTHONPATH=. python3 benchmarks/check_chat_template.py --length 2048 --samples 8
"""

from __future__ import annotations

import argparse

import torch

from attnsieve.eval.models import load_model
from attnsieve.eval.tasks import answer_budget, make_samples

TEMPLATE_TOKENS = 40  # the chat template's system prompt and turn markers, kept inside the length


def as_chat(tokenizer, prompt: str) -> str:
    """The prompt as a user turn, its answer prefix moved to the start of the assistant's turn."""
    cut = max(prompt.rfind("\nAnswer:"), prompt.rfind(" The pass key is"))
    instruction, prefix = prompt[:cut], prompt[cut:].replace("\nAnswer:", "").strip()
    turn = [{"role": "user", "content": instruction}]
    return tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False) + prefix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tasks", default="passkey,variable_tracking,niah_single")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model, tokenizer, _ = load_model("smollm2", device=args.device)
    for task in args.tasks.split(","):
        samples = make_samples(task, tokenizer, args.length - TEMPLATE_TOKENS, args.samples, 0)
        accuracy = {"plain": 0.0, "chat": 0.0}
        for sample in samples:
            for mode, text in (
                ("plain", sample.prompt),
                ("chat", as_chat(tokenizer, sample.prompt)),
            ):
                ids = tokenizer.encode(text, add_special_tokens=mode == "plain")
                with torch.inference_mode():
                    out = model.generate(
                        torch.tensor([ids], device=model.device), do_sample=False,
                        max_new_tokens=answer_budget(tokenizer, sample.target),
                    )  # fmt: skip
                answer = tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
                accuracy[mode] += sample.score(answer) / len(samples)
        print(f"{task} {args.length}: dense accuracy over {len(samples)} samples {accuracy}")


if __name__ == "__main__":
    main()
