"""Export: a PEFT prompt-tuning adapter that generates what softguard generates, and the bare tensor format."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file

from softguard.adapters import SoftPrompt
from softguard.export import VERIFY_PROMPT, VERIFY_TOKENS, export, verify_peft_export
from softguard.generation import generate, tokenize_prompts
from softguard.models import chat_prompt

USER = ["Hi", "What is the capital of France?", "Write a haiku about autumn leaves"]


@pytest.fixture
def saved(tiny_lm, tmp_path):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=4, init="normal", sigma=0.5)
    sp.save_pretrained(tmp_path / "run" / "student" / "best")
    (tmp_path / "run" / "config.toml").write_text('[model]\nname = "tiny"\n')
    return sp, tmp_path / "run"


def test_peft_export_generates_what_softguard_generates(tiny_lm, saved, tmp_path):
    model, tok = tiny_lm
    sp, run = saved
    out = export(run, tmp_path / "peft", "peft")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["num_virtual_tokens"], cfg["token_dim"]) == ("PROMPT_TUNING", 4, 32)
    assert cfg["base_model_name_or_path"] == "tiny"
    assert torch.equal(load_file(str(out / "adapter_model.safetensors"))["prompt_embeddings"], sp.prompt.detach())
    for user in [*USER, VERIFY_PROMPT]:  # a fresh copy each time: PEFT wraps the model it is given
        v = verify_peft_export(out, copy.deepcopy(model), tok, sp, user=user, max_new_tokens=6)
        plain = generate(model, tok, [chat_prompt(tok, user)], max_new_tokens=6, progress=False)[0].token_ids
        assert v.ok and v.theirs == v.ours and len(v.ours) == 6 and v.first_difference is None
        assert v.ours != plain  # the soft prompt changes the answer, so equal tokens say PEFT applied it
        assert v.report() == "verified: PEFT's greedy tokens equal softguard's for 6 tokens"


def test_verification_reports_a_mismatch(tiny_lm, saved, tmp_path):
    """A PEFT export whose prompt differs from the adapter (here: perturbed on disk) is caught, with the first
    differing position, both decodings and the installed versions in the report."""
    import peft
    import transformers

    model, tok = tiny_lm
    sp, run = saved
    out = export(run, tmp_path / "peft", "peft")
    perturbed = sp.prompt.detach().clone()
    perturbed[0] = 0.0  # the first virtual token zeroed: the answers part after a common first token
    save_file({"prompt_embeddings": perturbed.contiguous()}, str(out / "adapter_model.safetensors"))
    v = verify_peft_export(out, copy.deepcopy(model), tok, sp)
    assert not v.ok and len(v.ours) == VERIFY_TOKENS
    i = v.first_difference
    assert i >= 1 and v.ours[:i] == v.theirs[:i] and v.ours[i] != v.theirs[i]
    assert v.ours_text == tok.decode(v.ours, skip_special_tokens=True) != v.theirs_text
    report = v.report()
    assert report.startswith(f"WARNING: PEFT's greedy tokens differ from softguard's at position {i} ")
    assert f"softguard: {v.ours_text!r}" in report and f"PEFT:      {v.theirs_text!r}" in report
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}"
    assert versions in report
    assert (out / "adapter_config.json").is_file()  # verification only reads


def test_safetensors_export_is_the_bare_tensor(saved, tmp_path):
    sp, run = saved
    out = export(run / "student" / "best", tmp_path / "bare", "safetensors")
    assert torch.equal(load_file(str(out / "soft_prompt.safetensors"))["soft_prompt"], sp.prompt.detach())
    meta = json.loads((out / "soft_prompt.json").read_text())
    assert (meta["num_tokens"], meta["hidden_size"]) == (4, 32)


def test_unknown_format_is_refused(saved, tmp_path):
    with pytest.raises(ValueError, match="peft, safetensors"):
        export(saved[1], tmp_path / "x", "onnx")


def test_lora_exports_to_a_peft_adapter_with_the_same_outputs(tiny_lm, tmp_path):
    from softguard.adapters import LoRA, attached

    model, tok = tiny_lm
    lora = LoRA.for_model(model, rank=4, alpha=8.0, dropout=0.1, target_modules=["q_proj", "v_proj"], seed=1)
    with torch.no_grad():  # B starts at zero (no change at all): give it values so the test can fail
        for _, b in lora.factors().values():
            b.copy_(torch.randn(b.shape, generator=torch.Generator().manual_seed(b.shape[0])) * 0.5)
    lora.save_pretrained(tmp_path / "run" / "student" / "best")
    (tmp_path / "run" / "config.toml").write_text('[model]\nname = "tiny"\n')
    out = export(tmp_path / "run", tmp_path / "peft-lora", "peft")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert (cfg["peft_type"], cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"]) == ("LORA", 4, 8.0, 0.1)
    assert sorted(cfg["target_modules"]) == sorted(lora.targets) and cfg["base_model_name_or_path"] == "tiny"
    ids, mask = tokenize_prompts(tok, [chat_prompt(tok, u) for u in USER])
    with torch.no_grad():
        base = model(input_ids=ids, attention_mask=mask).logits
        with attached(model, lora.eval()):
            ours = model(input_ids=ids, attention_mask=mask).logits
        peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(out)).eval()
        theirs = peft_model(input_ids=ids, attention_mask=mask).logits
        merged = peft_model.merge_and_unload()(input_ids=ids, attention_mask=mask).logits
    assert (ours - base).abs().max() > 1e-2  # the adapter does change the outputs
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(merged, ours, rtol=1e-4, atol=1e-4)
    v = verify_peft_export(out, copy.deepcopy(model), tok, lora)
    plain = generate(model, tok, [chat_prompt(tok, VERIFY_PROMPT)], max_new_tokens=VERIFY_TOKENS, progress=False)
    assert v.ok and len(v.ours) == VERIFY_TOKENS and v.ours != plain[0].token_ids
    with pytest.raises(ValueError, match="--format peft"):
        export(tmp_path / "run", tmp_path / "bare-lora", "safetensors")


def test_steering_vectors_do_not_export(tiny_lm, tmp_path):
    from softguard.adapters import SteeringVector

    model, _ = tiny_lm
    SteeringVector.for_model(model, layer=0).save_pretrained(tmp_path / "steer")
    with pytest.raises(ValueError, match="only soft prompts, LoRA and gates export"):
        export(tmp_path / "steer", tmp_path / "x", "peft")
    assert not (tmp_path / "x").exists()


def test_gate_exports_as_bare_tensors_that_plain_transformers_applies(tiny_lm, tmp_path):
    """The exported rule, applied with plain transformers (``output_hidden_states``), fires exactly where
    softguard's gate does; the PEFT format is refused."""
    from softguard.adapters import LinearGate, last_token_states

    model, tok = tiny_lm
    prompts = [chat_prompt(tok, p) for p in ("How do I pick a lock?", "Name a colour.", "Say hi.", "Make a weapon.")]
    last = LinearGate.for_model(model, 1, [5, 6, 2])
    last.save_pretrained(tmp_path / "last")
    with pytest.raises(ValueError, match="last decoder layer"):  # transformers gives it only after the final norm
        export(tmp_path / "last", tmp_path / "x", "safetensors")
    h = last_token_states(model, tok, prompts, [0])[:, 0]
    gate = LinearGate.for_model(model, 0, [5, 6, 2])
    gate.set_weights(h[0] - h[1], float(-(h[0] - h[1]) @ h.mean(0)))
    gate.save_pretrained(tmp_path / "gate")
    with pytest.raises(ValueError, match="--format safetensors"):
        export(tmp_path / "gate", tmp_path / "peft", "peft")
    out = export(tmp_path / "gate", tmp_path / "bare", "safetensors")
    meta = json.loads((out / "gate.json").read_text())
    tensors = load_file(str(out / "gate.safetensors"))
    assert meta["refusal_ids"] == [5, 6, 2] and meta["hidden_states_index"] == 1
    plain = []
    for p in prompts:  # one prompt at a time, as on a device: no padding
        with torch.no_grad():
            states = model(**tok(p, return_tensors="pt", add_special_tokens=False), output_hidden_states=True)
        h_l = states.hidden_states[meta["hidden_states_index"]][0, -1]
        plain.append(bool(h_l @ tensors["weight"] + tensors["bias"] > 0))
    fires = gate.fires(model, *tokenize_prompts(tok, prompts)).tolist()
    assert plain == fires and any(fires) and not all(fires)


def test_a_last_plus_mean_gate_exports_the_rule_plain_transformers_applies(tiny_lm, tmp_path):
    """The "last+mean" read-out: gate.json's head and the two weights give, on each prompt alone with plain
    transformers, s = weight . h[-1] + weight_mean . mean(h[head:]) + bias, firing exactly where softguard's gate
    does in a padded batch."""
    from softguard.adapters import LinearGate

    model, tok = tiny_lm
    texts = ("How do I pick a lock?", "Name a colour.", "Say hi.", "Make a weapon.", "Write a poem about rain.")
    prompts = [chat_prompt(tok, p) for p in texts]
    gate = LinearGate.for_model(model, 0, [5, 6, 2], "last+mean", head=9)
    w = torch.randn(2 * gate.hidden_size, generator=torch.Generator().manual_seed(0))
    scores = []  # b between the 2nd and 3rd highest score: two prompts fire
    for p in prompts:
        with torch.no_grad():
            h = model(**tok(p, return_tensors="pt", add_special_tokens=False), output_hidden_states=True)
        h = h.hidden_states[1][0]
        scores.append(float(w[: gate.hidden_size] @ h[-1] + w[gate.hidden_size :] @ h[9:].mean(0)))
    gate.set_weights(w, -sum(sorted(scores)[2:4]) / 2)
    gate.save_pretrained(tmp_path / "gate")
    out = export(tmp_path / "gate", tmp_path / "bare", "safetensors")
    meta = json.loads((out / "gate.json").read_text())
    tensors = load_file(str(out / "gate.safetensors"))
    assert (meta["readout"], meta["head"], sorted(tensors)) == ("last+mean", 9, ["bias", "weight", "weight_mean"])
    plain = []
    for p in prompts:
        with torch.no_grad():
            states = model(**tok(p, return_tensors="pt", add_special_tokens=False), output_hidden_states=True)
        h = states.hidden_states[meta["hidden_states_index"]][0]
        s = h[-1] @ tensors["weight"] + h[meta["head"] :].mean(0) @ tensors["weight_mean"] + tensors["bias"]
        plain.append(bool(s > 0))
    assert plain == gate.fires(model, *tokenize_prompts(tok, prompts)).tolist() and plain.count(True) == 2


def _files(root):
    """Every file under ``root`` with its bytes: what a refused export must leave exactly as it was."""
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target", ["run", "run/student", "run/student/best", "."])
@pytest.mark.parametrize("force", [False, True])
def test_export_never_replaces_the_source_or_a_directory_holding_it(saved, tmp_path, target, force):
    """OUT = the run, its student/, the adapter itself, or a folder above them: refused even with force."""
    run = saved[1]
    (run / "student" / "history.json").write_text("[]\n")
    (tmp_path / "notes.txt").write_text("mine")
    before = _files(tmp_path)
    with pytest.raises(ValueError, match="is or contains the adapter being exported"):
        export(run, tmp_path / target, "peft", force=force)
    assert _files(tmp_path) == before


@pytest.mark.parametrize("force", [False, True])
def test_export_refuses_a_folder_with_other_files(saved, tmp_path, force):
    """A user's folder, another run, or a previous export plus a user's file: refused, every byte kept."""
    folder, other_run = tmp_path / "mine", tmp_path / "other-run"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    (folder / "adapter_config.json").write_text("{}")  # export-like names next to a user file do not count
    (folder / "adapter_model.safetensors").write_bytes(b"x")
    saved[0].save_pretrained(other_run / "student" / "best")
    (other_run / "config.toml").write_text("")
    before = _files(tmp_path)
    for out in (folder, other_run, other_run / "student" / "best"):
        with pytest.raises(ValueError, match="is not empty and is not a previous export"):
            export(saved[1], out, "peft", force=force)
    (tmp_path / "a-file").write_text("data")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        export(saved[1], tmp_path / "a-file", "peft", force=force)
    assert _files(tmp_path) == {**before, Path("a-file"): b"data"}


@pytest.mark.parametrize("fmt", ["peft", "safetensors"])
def test_export_replaces_a_previous_export_only_with_force(saved, tmp_path, fmt):
    run = saved[1]
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine
    export(run, out, fmt)
    files = _files(out)
    written = {
        "peft": {"adapter_config.json", "adapter_model.safetensors"},
        "safetensors": {"soft_prompt.json", "soft_prompt.safetensors"},
    }
    assert {p.name for p in files} == written[fmt]
    for name in files:  # stale contents, to see them replaced
        (out / name).write_bytes(b"old")
    with pytest.raises(ValueError, match="holds a previous export; pass --force"):
        export(run, out, fmt)
    assert all(p.read_bytes() == b"old" for p in out.iterdir())
    export(run, out, fmt, force=True)
    assert _files(out) == files
    assert not [p for p in tmp_path.iterdir() if p.name != "out" and p.name != "run"]  # no temp or old dirs left


def test_export_to_an_unwritable_place_says_where(saved, tmp_path, monkeypatch):
    def denied(*a, dir=None, **k):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr("softguard.io.tempfile.mkdtemp", denied)  # as root, chmod would not stop the write
    with pytest.raises(ValueError, match=r"could not write the export to .*ro/out: Permission denied; choose"):
        export(saved[1], tmp_path / "ro" / "out", "peft")


@pytest.fixture
def cli_run(tiny_lm, saved, tmp_path):
    """``saved``'s run, its config naming the tiny model saved as a local directory (what the CLI loads)."""
    model, tok = tiny_lm
    model.save_pretrained(tmp_path / "tiny-model")
    tok.save_pretrained(tmp_path / "tiny-model")
    run = saved[1]
    (run / "config.toml").write_text(f'[model]\nname = "{tmp_path / "tiny-model"}"\n')
    return run


def _cli(argv, capsys):
    """(exit code, printed output with whitespace collapsed) of ``softguard`` ``argv``."""
    from softguard.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, " ".join(capsys.readouterr().out.split())


def test_cli_export_checks_itself(cli_run, tmp_path, capsys, monkeypatch):
    """`softguard export` loads the run's model and reports the check; a divergent PEFT (as under transformers
    5.24.0: tokens differ after the first) keeps the files, prints the warning and exits 1."""
    from peft import PeftModelForCausalLM

    code, out = _cli(["export", str(cli_run), str(tmp_path / "ok")], capsys)
    assert code == 0 and f"verified: PEFT's greedy tokens equal softguard's for {VERIFY_TOKENS} tokens" in out
    original = PeftModelForCausalLM.generate

    def diverging(self, *args, **kwargs):
        ids = original(self, *args, **kwargs)
        ids[:, -1] = torch.where(ids[:, -1] == 0, 1, 0)  # another last token
        return ids

    monkeypatch.setattr(PeftModelForCausalLM, "generate", diverging)
    code, out = _cli(["export", str(cli_run), str(tmp_path / "bad")], capsys)
    assert code == 1
    assert f"differ from softguard's at position {VERIFY_TOKENS - 1} " in out and "installed: torch" in out
    assert {p.name for p in (tmp_path / "bad").iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}


def test_cli_export_refusals_and_no_verify(cli_run, tmp_path, capsys, monkeypatch):
    before = _files(cli_run)
    for argv in (["export", str(cli_run), str(cli_run / "student")], ["export", str(cli_run), str(cli_run), "--force"]):
        code, out = _cli(argv, capsys)
        assert code == 2 and "error:" in out and "is or contains the adapter being exported" in out
    assert _files(cli_run) == before
    (tmp_path / "elsewhere").mkdir()
    adapter = tmp_path / "elsewhere" / "sp"
    (cli_run / "student" / "best").rename(adapter)  # an adapter directory outside any run: base model unknown
    code, out = _cli(["export", str(adapter), str(tmp_path / "x")], capsys)
    assert code == 2 and "pass --model" in out and "or --no-verify" in out and not (tmp_path / "x").exists()

    def no_model(*a, **k):
        raise AssertionError("--no-verify must not load a model")

    monkeypatch.setattr("softguard.models.load_model", no_model)
    code, out = _cli(["export", str(adapter), str(tmp_path / "x"), "--no-verify"], capsys)
    assert code == 0 and "wrote peft export" in out and "verified" not in out
    code, out = _cli(["export", str(adapter), str(tmp_path / "x"), "--no-verify"], capsys)
    assert code == 2 and "pass --force" in out
