"""The student's vs the base model's first-token distribution on benign prompts (greedy evaluation of a run).

    python docs/results/fidelity/first_token.py runs/demo > docs/results/fidelity/first_token.txt

For up to 12 benign prompts the student refuses and the system answers ("over-refused"), and 12 the student answers
("answered"): the student's q("I") (r*'s first token), the base model's p("I"), each one's largest first-token
probability and the first-token TV between them, averaged; the first three of each group with their top-4 tokens.
"""

import json
import sys
from pathlib import Path

import torch

from softguard.adapters import attached, decoder_hidden, load_adapter
from softguard.models import chat_prompt, load_model


def first_token(model, tok, prompt: str, adapter) -> torch.Tensor:
    """The next-token distribution [V] after the templated prompt, with ``adapter`` (None: the base model)."""
    ids = tok(chat_prompt(tok, prompt), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad(), attached(model, adapter):
        h = decoder_hidden(model, adapter, ids["input_ids"], ids["attention_mask"])[:, -1]
        return model.get_output_embeddings()(h).float().softmax(-1)[0]


def top(tok, p: torch.Tensor) -> list[tuple[str, float]]:
    v, i = p.topk(4)
    return [(tok.decode([j]), round(x, 3)) for j, x in zip(i.tolist(), v.tolist(), strict=True)]


def main(run: Path) -> None:
    torch.set_num_threads(1)
    model, tok = load_model("smollm2-135m")
    adapter = load_adapter(run / "student" / "best", model)
    with open(run / "generations.jsonl") as f:
        benign = [r for r in map(json.loads, f) if not r["harmful"]]
    groups = {
        "over-refused": [r for r in benign if r["student"]["refused"] and not r["system"]["refused"]],
        "answered": [r for r in benign if not r["student"]["refused"]],
    }
    refusal_start = tok("I", add_special_tokens=False)["input_ids"][0]
    print(f"benign prompts {len(benign)}, student over-refusals {len(groups['over-refused'])}")
    for name, rows in groups.items():
        stats = []
        for k, r in enumerate(rows[:12]):
            q, p = first_token(model, tok, r["prompt"], adapter), first_token(model, tok, r["prompt"], None)
            tv = 0.5 * (q - p).abs().sum().item()
            stats.append([q[refusal_start].item(), p[refusal_start].item(), q.max().item(), p.max().item(), tv])
            if k < 3:
                print(f"{name} [{r['set']}] {r['prompt'][:60]!r}")
                print(f"    student {top(tok, q)} -> {r['student']['response'][:50]!r}")
                print(f"    base    {top(tok, p)}")
        m = torch.tensor(stats).mean(0).tolist()
        print(
            f"{name} (n={len(stats)}): mean q(I) {m[0]:.3f}, base p(I) {m[1]:.3f}, max q {m[2]:.3f}, "
            f"max base p {m[3]:.3f}, first-token TV {m[4]:.3f}"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
