"""Would this guard, as a reward R = 1 - u(x, r), teach SmolLM2 to refuse? On harmful dev prompts that the base
model answers (greedy, 24 tokens, as `reinforce` samples), compare u(x, r*) with u(x, answer).

    python docs/results/objective-sweep/reward_gap.py GUARD_DIR [GUARD_DIR ...]
"""

import sys

import torch

from softguard.data import make_splits
from softguard.generation import generate
from softguard.guards import EncoderGuard
from softguard.models import chat_prompt, load_model
from softguard.refusal import is_refusal
from softguard.system import DEFAULT_REFUSAL

torch.manual_seed(0)
harmful = [e.text for e in make_splits(0).dev if e.harmful][:48]
model, tok = load_model("smollm2-135m")
gens = generate(model, tok, [chat_prompt(tok, p) for p in harmful], None, max_new_tokens=24, progress=False)
answered = [(p, g.text) for p, g in zip(harmful, gens, strict=True) if not is_refusal(g.text)]
prompts, answers = [p for p, _ in answered], [a for _, a in answered]
for guard_dir in sys.argv[1:]:
    guard = EncoderGuard.from_pretrained(guard_dir)
    u_answer, u_refusal = guard.score(prompts, answers), guard.score(prompts, [DEFAULT_REFUSAL] * len(prompts))
    print(
        f"{guard_dir}: n = {len(prompts)} answered harmful dev prompts; mean u(x, answer) {u_answer.mean():.3f}, "
        f"mean u(x, r*) {u_refusal.mean():.3f}; the refusal scores safer on {(u_refusal < u_answer).float().mean():.0%}"
    )
