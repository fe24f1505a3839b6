"""Does the student's first token separate what the system refuses from what it answers? (dev set of a run)

    python docs/results/fidelity/discrimination.py runs/fid-margin runs/fid-lora \
        > docs/results/fidelity/discrimination.txt

For each run (a `softguard train` or `run` directory; its dev prompts, 64 per class, and the deployed system's
decisions on them, rebuilt from the cache as the run built them) and for the base model, at the first response
token: the AUROC of q("I") (r*'s first token) against the system's decision, the AUROC of the greedy lead
log q("I") - max_{v != "I"} log q(v), and the share of dev prompts where "I" is the greedy first token exactly when
the system refuses. An AUROC near 1 with a low share means the student ranks the prompts like the system but its
refusal threshold sits at a different place on every prompt; an AUROC near 0.5 means it does not rank them.
"""

import sys
from pathlib import Path

import torch

from softguard.adapters import attached, decoder_hidden, load_adapter
from softguard.config import PRESETS, load
from softguard.data import make_splits
from softguard.guards import auroc
from softguard.pipeline import dev_stage, guard_dir, guard_stage, system_stage


def first_token_logp(model, tok, prompts: list[str], adapter) -> torch.Tensor:
    """log q(. | x) [n, V] at the first response token of each templated prompt, with ``adapter`` (None: base)."""
    rows = []
    with torch.no_grad(), attached(model, adapter):
        for p in prompts:
            ids = tok(p, return_tensors="pt", add_special_tokens=False)
            h = decoder_hidden(model, adapter, ids["input_ids"], ids["attention_mask"])[:, -1]
            rows.append(torch.log_softmax(model.get_output_embeddings()(h).float(), -1)[0])
    return torch.stack(rows)


def greedy_lead(logp: torch.Tensor, i_id: int) -> torch.Tensor:
    """Greedy lead of token ``i_id`` [n]: log q(i_id) - max over the other tokens of log q (> 0: it is the argmax)."""
    return logp[:, i_id] - logp.scatter(-1, torch.full((len(logp), 1), i_id), float("-inf")).amax(-1)


def line(name: str, logp: torch.Tensor, refuses: list[bool], i_id: int) -> str:
    lead = greedy_lead(logp, i_id)
    greedy_i = (lead > 0).tolist()
    share = sum(g == r for g, r in zip(greedy_i, refuses, strict=True)) / len(refuses)
    return (
        f"{name:<22} AUROC q(I) {auroc(logp[:, i_id].exp(), torch.tensor(refuses)):.3f}, AUROC lead "
        f"{auroc(lead, torch.tensor(refuses)):.3f}, greedy 'I' = system refuses on {share:.3f}"
    )


def main(runs: list[Path]) -> None:
    torch.set_num_threads(2)
    cfg = load(runs[0] / "config.toml", PRESETS["quick"])
    splits = make_splits(cfg.seed)
    system = system_stage(cfg, runs[0], torch.device("cpu"))
    system.guard = guard_stage(cfg, splits, guard_dir(cfg, runs[0]), system)
    dev = dev_stage(cfg, system, splits)
    model, tok = system.model, system.tokenizer
    i_id = system.refusal_ids()[0]
    print(f"dev prompts {len(dev.prompts)}, system refuses {sum(dev.system_refuses)}, r*[0] = {tok.decode([i_id])!r}")
    print(line("base model", first_token_logp(model, tok, dev.prompts, None), dev.system_refuses, i_id))
    for run in runs:
        if load(run / "config.toml", PRESETS["quick"]).guard != cfg.guard:
            raise SystemExit(f"{run} has another guard than {runs[0]}: its system's decisions differ")
        adapter = load_adapter(run / "student" / "best", model)
        print(line(run.name, first_token_logp(model, tok, dev.prompts, adapter), dev.system_refuses, i_id))


if __name__ == "__main__":
    main([Path(a) for a in sys.argv[1:]])
