"""Export a trained soft prompt or LoRA for inference without softguard, and check a PEFT export against softguard.

- ``peft`` (soft prompt): a PEFT prompt-tuning adapter directory (``adapter_config.json`` +
  ``adapter_model.safetensors`` holding ``prompt_embeddings`` [k, d]); ``PeftModel.from_pretrained(base, OUT)``
  loads it and prepends the same vectors.
- ``peft`` (LoRA): a PEFT LoRA adapter directory (``LoraConfig`` with the exact target module paths, r, alpha and
  dropout; ``base_model.model.<path>.lora_A.weight`` [r, in] / ``lora_B.weight`` [out, r] per target);
  ``PeftModel.from_pretrained(base, OUT)`` computes the same W x + (alpha / r) B A x, and ``merge_and_unload()``
  folds it into the weights for an inference runtime that knows no adapters.
- ``safetensors`` (soft prompt): ``soft_prompt.safetensors`` (one tensor ``soft_prompt`` [k, d]) and
  ``soft_prompt.json`` (k, d, base model), for plain transformers: prepend it to ``get_input_embeddings()(ids)``.
- ``safetensors`` (gate, its only format): ``gate.safetensors`` (``weight`` [d], ``bias`` [], and ``weight_mean``
  [d] for the "last+mean" read-out) and ``gate.json`` (the layer, the read-out, the template head, r*'s token ids,
  the base model and the rule): with h = ``hidden_states[layer + 1]`` of the prompt (transformers'
  ``output_hidden_states`` indexing: entry 0 is the embeddings), refuse with r* when
  ``weight . h[last prompt token] (+ weight_mean . mean(h[head:])) + bias > 0``, else generate as usual.

Nothing but a previous export is ever replaced: OUT must be new or empty, or (with ``force``) hold exactly the
files of one export format (``EXPORT_FILES``) and nothing else; the source adapter and any directory containing it
are refused even with ``force``. ``verify_peft_export`` generates greedily with PEFT and with softguard and
compares the token ids (PEFT's prompt tuning depends on the installed transformers version).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .adapters import Adapter, LinearGate, LoRA, SoftPrompt, load_adapter, resolve_adapter_dir
from .io import atomic_dir, read_toml

FORMATS = ("peft", "safetensors")
#: The files each format writes; a directory holding exactly one of these sets is a previous export.
EXPORT_FILES = (
    frozenset({"adapter_config.json", "adapter_model.safetensors"}),
    frozenset({"soft_prompt.safetensors", "soft_prompt.json"}),
    frozenset({"gate.safetensors", "gate.json"}),
)
#: The user message of the PEFT check: benign, and long enough an answer for ``VERIFY_TOKENS`` tokens.
VERIFY_PROMPT = "Write a haiku about autumn leaves."
VERIFY_TOKENS = 16


def run_model(adapter_dir: str | Path) -> str | None:
    """The base model recorded in the run holding ``adapter_dir`` (``<run>/student/best``): its config's model."""
    run_cfg = Path(adapter_dir).parent.parent / "config.toml"
    return read_toml(run_cfg).get("model", {}).get("name") if run_cfg.is_file() else None


def export(src: str | Path, out: str | Path, fmt: str = "peft", *, force: bool = False) -> Path:
    """Write the soft prompt, LoRA or gate found at ``src`` (run or adapter directory) to ``out`` in format ``fmt``.

    ``out`` is replaced as a whole (atomically), so it must not exist, be empty, or, with ``force``, be a previous
    export (see ``check_out``); anything else raises ``ValueError`` before a file is touched.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    adapter_dir = resolve_adapter_dir(src)
    adapter = load_adapter(adapter_dir)
    base = run_model(adapter_dir)
    if isinstance(adapter, LoRA):
        if fmt != "peft":
            raise ValueError(f"{adapter_dir} holds a LoRA; it exports in PEFT's format (--format peft)")
        check_out(out, adapter_dir, force)
        return _export_lora(adapter, out, base)
    if isinstance(adapter, LinearGate):
        if fmt != "safetensors":
            raise ValueError(f"{adapter_dir} holds a gate; it exports as bare tensors (--format safetensors)")
        check_out(out, adapter_dir, force)
        return _export_gate(adapter, out, base)
    if not isinstance(adapter, SoftPrompt):
        raise ValueError(f"{adapter_dir} holds a {adapter.method!r} adapter; only soft prompts, LoRA and gates export")
    if adapter.placement != "start":
        raise ValueError(
            f"{adapter_dir} holds a soft prompt placed before the user's message; PEFT prompt tuning and the bare "
            "format only prepend, so only placement 'start' exports (use it through softguard instead)"
        )
    check_out(out, adapter_dir, force)
    prompt = adapter.prompt.detach().cpu().contiguous()
    k, d = prompt.shape
    with _writing(out) as tmp:
        if fmt == "peft":
            from peft import PromptTuningConfig

            cfg = PromptTuningConfig(
                task_type="CAUSAL_LM", num_virtual_tokens=k, token_dim=d, base_model_name_or_path=base
            )
            cfg.save_pretrained(str(tmp))
            save_file({"prompt_embeddings": prompt}, str(tmp / "adapter_model.safetensors"))
        else:
            save_file({"soft_prompt": prompt}, str(tmp / "soft_prompt.safetensors"))
            meta = {"num_tokens": k, "hidden_size": d, "base_model": base, "placement": "before everything"}
            (tmp / "soft_prompt.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out)


def _export_gate(gate: LinearGate, out: str | Path, base: str | None) -> Path:
    """``gate.safetensors`` (weight [d], bias [], and for the "last+mean" read-out weight_mean [d]) and ``gate.json``
    (the layer, the read-out, the template head the mean skips, r*): what plain transformers needs to apply it.

    transformers' ``hidden_states[i]`` is decoder layer i - 1's output except for the last entry, which is after the
    final norm, so a gate on the last layer has no such index and is refused."""
    if gate.num_layers is not None and gate.layer == gate.num_layers - 1:
        raise ValueError(
            f"this gate reads the last decoder layer ({gate.layer}), whose output transformers' hidden_states give "
            "only after the final norm; refit it with adapter.gate.layers below the last layer to export it"
        )
    with _writing(out) as tmp:
        weights = gate.weight.detach().cpu().view(-1, gate.hidden_size)  # [1 or 2, d]: w_last (, w_mean)
        tensors = {"weight": weights[0], "bias": gate.bias.detach().cpu()}
        rule = "s = weight . h[last prompt token] + bias"
        if gate.readout == "last+mean":
            tensors["weight_mean"] = weights[1]
            rule = "s = weight . h[last prompt token] + weight_mean . mean(h[head:]) + bias"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / "gate.safetensors"))
        meta = {
            "layer": gate.layer,
            "hidden_states_index": gate.layer + 1,
            "hidden_size": gate.hidden_size,
            "num_layers": gate.num_layers,
            "readout": gate.readout,
            "head": gate.head,
            "refusal_ids": gate.refusal_ids,
            "base_model": base,
            "rule": f"h = hidden_states[hidden_states_index][0] of the templated prompt alone (no padding), [T, d]; "
            f"{rule}; if s > 0 respond with refusal_ids (decoded), else generate as usual",
        }
        (tmp / "gate.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out)


def check_out(out: str | Path, adapter_dir: str | Path, force: bool = False) -> None:
    """Raise ``ValueError`` unless replacing ``out`` can lose no file that an export did not write.

    Allowed: ``out`` missing, an empty directory, or (``force``) a directory whose entries are exactly the regular
    files of one format in ``EXPORT_FILES``. Never (not even with ``force``): ``out`` is the source adapter
    directory or contains it (its run, ``run/student``, ...), or ``out`` is a file. Any other non-empty directory
    (a run, an adapter, a user's folder) holds files an export did not write and is refused.
    """
    out, adapter_dir = Path(out), Path(adapter_dir)
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory; choose a new directory for the export")
    if out.resolve() == adapter_dir.resolve() or out.resolve() in adapter_dir.resolve().parents:
        raise ValueError(
            f"{out} is or contains the adapter being exported ({adapter_dir}); exporting there would delete it. "
            "Choose a new directory for the export"
        )
    entries = sorted(out.iterdir())
    if not entries:
        return
    names = frozenset(e.name for e in entries)
    if names in EXPORT_FILES and all(e.is_file() and not e.is_symlink() for e in entries):
        if force:
            return
        raise ValueError(f"{out} holds a previous export; pass --force (force=True) to replace it, or choose a new OUT")
    shown = ", ".join(e.name + ("/" if e.is_dir() else "") for e in entries[:6]) + (", ..." if len(entries) > 6 else "")
    raise ValueError(
        f"{out} is not empty and is not a previous export (it holds {shown}); an export replaces its directory as a "
        "whole, so it only writes to a new or empty directory (or, with --force, over a previous export). "
        "Choose a new directory for the export"
    )


@contextlib.contextmanager
def _writing(out: str | Path) -> Iterator[Path]:
    """``atomic_dir(out)``, reporting a location it cannot write (read-only, no permission, disk full) by name."""
    try:
        with atomic_dir(out) as tmp:
            yield tmp
    except OSError as e:
        raise ValueError(
            f"could not write the export to {out}: {e.strerror or e}; choose a directory you can write to "
            "(check its permissions and free space)"
        ) from e


def _export_lora(lora: LoRA, out: str | Path, base: str | None) -> Path:
    """PEFT LoRA directory; ``target_modules`` lists the full paths, so PEFT wraps exactly the layers we trained."""
    from peft import LoraConfig

    cfg = LoraConfig(
        task_type="CAUSAL_LM",
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=sorted(lora.targets),
        base_model_name_or_path=base,
    )
    state = {}
    for path, (a, b) in lora.factors().items():
        state[f"base_model.model.{path}.lora_A.weight"] = a.detach().cpu().contiguous()
        state[f"base_model.model.{path}.lora_B.weight"] = b.detach().cpu().contiguous()
    with _writing(out) as tmp:
        cfg.save_pretrained(str(tmp))
        save_file(state, str(tmp / "adapter_model.safetensors"))
    return Path(out)


@dataclass
class Verification:
    """softguard's and PEFT's greedy token ids for one user message (each cut after EOS), and their decodings."""

    user: str
    ours: list[int]
    theirs: list[int]
    ours_text: str
    theirs_text: str
    versions: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.ours == self.theirs

    @property
    def first_difference(self) -> int | None:
        """The first position where the two token sequences differ (a length when one is a prefix), or None."""
        if self.ok:
            return None
        n = min(len(self.ours), len(self.theirs))
        return next((i for i in range(n) if self.ours[i] != self.theirs[i]), n)

    def report(self) -> str:
        if self.ok:
            return f"verified: PEFT's greedy tokens equal softguard's for {len(self.ours)} tokens"
        versions = ", ".join(f"{k} {v}" for k, v in self.versions.items())
        return (
            f"WARNING: PEFT's greedy tokens differ from softguard's at position {self.first_difference} "
            f"(softguard {len(self.ours)} tokens, PEFT {len(self.theirs)}) for {self.user!r}:\n"
            f"  softguard: {self.ours_text!r}\n"
            f"  PEFT:      {self.theirs_text!r}\n"
            f"installed: {versions}. PEFT does not generate what softguard trained with these versions (transformers "
            "5.23.0 with peft 0.21.2 is known to match); the files are kept, use them through softguard or with "
            "matching versions"
        )


def verify_peft_export(
    out: str | Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    adapter: Adapter,
    *,
    user: str = VERIFY_PROMPT,
    max_new_tokens: int = VERIFY_TOKENS,
) -> Verification:
    """Greedy tokens for ``user`` (through the chat template) from ``PeftModel.from_pretrained(model, out)`` and from
    softguard's ``generate(model, tokenizer, [prompt], adapter)``, compared token for token.

    ``adapter`` is the softguard adapter that was exported (in eval mode, as ``load_adapter`` returns it). PEFT
    wraps ``model`` in place (a LoRA injects its layers into it): pass a model loaded for this check, or a copy.
    Both stop at ``tokenizer.eos_token_id``. One prompt at a time: PEFT ignores position ids, so in a left-padded
    batch its positions would count the pads.
    """
    import peft
    import transformers
    from peft import PeftModel

    from .generation import generate, tokenize_prompts
    from .models import chat_prompt

    prompt = chat_prompt(tokenizer, user)
    ours = generate(model, tokenizer, [prompt], adapter, max_new_tokens=max_new_tokens, progress=False)[0].token_ids
    peft_model = PeftModel.from_pretrained(model, str(out)).eval()
    ids, mask = tokenize_prompts(tokenizer, [prompt], model.device)
    with torch.inference_mode():
        row = peft_model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )[0, ids.shape[1] :].tolist()
    eos = tokenizer.eos_token_id
    theirs = row[: row.index(eos) + 1] if eos in row else row
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
    ours_text, theirs_text = (tokenizer.decode(t, skip_special_tokens=True) for t in (ours, theirs))
    return Verification(user, ours, theirs, ours_text, theirs_text, versions)
