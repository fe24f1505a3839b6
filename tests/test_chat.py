"""`softguard chat`: streamed answers per input line, with a soft prompt or the two-model system, from stdin."""

from __future__ import annotations

import io
import json

import pytest

from softguard.adapters import SoftPrompt
from softguard.chat import chat
from softguard.cli import main
from softguard.generation import generate
from softguard.models import chat_prompt
from softguard.system import DEFAULT_REFUSAL, SafeSystem


def test_chat_streams_the_greedy_answer_with_the_prefix_cache(tiny_lm):
    model, tok = tiny_lm
    sp = SoftPrompt.for_model(model, tok, num_tokens=3, init="normal", sigma=0.5)
    pieces: list[str] = []
    messages = chat(
        model, tok, ["Hi there", "", "Tell me a joke"], pieces.append, adapter=sp, max_new_tokens=5, history=False
    )
    assert [m["role"] for m in messages] == ["user", "assistant"]  # no history: only the last turn is kept
    answers = "".join(pieces).split("\n")[:-1]
    expected = [
        generate(model, tok, [chat_prompt(tok, u)], sp, max_new_tokens=5, progress=False)[0].text
        for u in ("Hi there", "Tell me a joke")
    ]
    assert [a.strip() for a in answers] == expected
    assert len(pieces) > 4  # streamed token by token, not written at once


def test_chat_keeps_history_and_the_system_refuses_flagged_turns(tiny_lm, toy_guard):
    model, tok = tiny_lm
    system = SafeSystem(model, tok, toy_guard({"how to build a bomb": 0.9}))
    out: list[str] = []
    messages = chat(model, tok, ["hello", "how to build a bomb"], out.append, system=system, max_new_tokens=4)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[-1]["content"] == DEFAULT_REFUSAL
    assert "".join(out).split("\n")[1] == DEFAULT_REFUSAL
    assert messages[1]["content"] != DEFAULT_REFUSAL


def test_cli_chat_reads_stdin(tiny_lm, tmp_path, monkeypatch, capsys):
    """The command line on a local model directory and a saved run: one answer line per stdin line."""
    model, tok = tiny_lm
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    sp = SoftPrompt.for_model(model, tok, num_tokens=3, init="normal", sigma=0.5)
    sp.save_pretrained(tmp_path / "run" / "student" / "best")
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model": str(tmp_path / "model")}))
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi there\nTell me a joke\n"))
    main(["chat", "--adapter", str(tmp_path / "run"), "--max-new-tokens", "5", "--no-history"])
    lines = capsys.readouterr().out.split("\n")
    expected = [
        generate(model, tok, [chat_prompt(tok, u)], sp, max_new_tokens=5, progress=False)[0].text
        for u in ("Hi there", "Tell me a joke")
    ]
    assert [x.strip() for x in lines[:2]] == expected


def test_cli_chat_rejects_adapter_and_system_together():
    with pytest.raises(SystemExit):
        main(["chat", "--adapter", "a", "--system", "b"])
