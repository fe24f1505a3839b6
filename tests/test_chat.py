"""`softguard chat`: streamed answers per input line, with a soft prompt or the two-model system, from stdin."""

from __future__ import annotations

import io

import pytest
import torch

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
    (tmp_path / "run" / "config.toml").write_text(f'[model]\nname = "{tmp_path / "model"}"\n')
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


def test_a_message_longer_than_the_context_gets_an_error_line_and_the_chat_goes_on(tiny_lm):
    """The tiny model's context is 512 tokens: a 600-word line is refused at once (no blank answer after minutes of
    decoding past the context), and the next line is answered as if the long one had not been sent."""
    model, tok = tiny_lm
    out: list[str] = []
    messages = chat(model, tok, ["word " * 600, "Hi there"], out.append, max_new_tokens=5)
    lines = "".join(out).split("\n")
    assert lines[0].startswith("error: this message is ") and lines[0].endswith(
        "at most 507 fit in the model's context with 5 new tokens: shorten it"
    )
    expected = generate(model, tok, [chat_prompt(tok, "Hi there")], max_new_tokens=5, progress=False)[0].text
    assert lines[1].strip() == expected and lines[2:] == [""]
    assert messages[0]["content"] == "Hi there"


def test_history_drops_the_oldest_turns_to_fit_the_context(tiny_lm):
    model, tok = tiny_lm
    turns = [f"{w} " * 180 for w in ("alpha", "beta", "gamma")]  # ~180 tokens each: two fit in 512, three do not
    messages = chat(model, tok, turns, lambda _: None, max_new_tokens=5)
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert users == [turns[1].strip(), turns[2].strip()]
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert len(tok(prompt, add_special_tokens=False)["input_ids"]) <= 507


def _saved_model(tiny_lm, tmp_path):
    model, tok = tiny_lm
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_cli_chat_answers_lines_that_are_not_utf8(tiny_lm, tmp_path, monkeypatch, capsys):
    """Bytes that are not UTF-8 on stdin used to raise TypeError in the tokenizer and end the chat; now they read
    as U+FFFD and every line is answered."""
    model, tok = tiny_lm
    run = tmp_path / "run"
    SoftPrompt.for_model(model, tok, num_tokens=2, init="normal").save_pretrained(run / "student" / "best")
    (run / "config.toml").write_text(f'[model]\nname = "{_saved_model(tiny_lm, tmp_path)}"\n')
    stdin = io.TextIOWrapper(io.BytesIO(b"caf\xe9 \xff\xfe\nHi there\n"), encoding="utf-8", errors="surrogateescape")
    monkeypatch.setattr("sys.stdin", stdin)
    main(["chat", "--adapter", str(run), "--max-new-tokens", "3", "--no-history"])
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 3 and lines[2] == ""  # two answers, each ending with a newline


class _ResponseOnlyGuard:
    """Flags every (prompt, response) pair and no prompt: the system refuses only in response mode."""

    def score(self, prompts, responses=None):
        return torch.full((len(prompts),), 0.0 if responses is None else 0.4)


def test_cli_chat_system_uses_the_runs_guard_mode_tau_and_refusal(tiny_lm, tmp_path, monkeypatch, capsys):
    """`chat --system RUN` builds the run's system: its given guard (not RUN/guard, any kind), guard mode, tau and
    refusal, from the run's config.toml."""
    from softguard.config import RunConfig, dumps, update

    loaded: list = []
    monkeypatch.setattr("softguard.guards.load_guard", lambda cfg, device: loaded.append(cfg) or _ResponseOnlyGuard())
    run = tmp_path / "run"
    run.mkdir()
    config = update(
        RunConfig(),
        {
            "model": {"name": str(_saved_model(tiny_lm, tmp_path))},
            "guard": {"path": "owner/some-guard", "kind": "classifier", "mode": "response", "tau": 0.3},
            "teacher": {"refusal": "No way."},
        },
    )
    (run / "config.toml").write_text(dumps(config))
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi there\nTell me a joke\n"))
    main(["chat", "--system", str(run), "--max-new-tokens", "3"])
    assert capsys.readouterr().out.split("\n") == ["No way.", "No way.", ""]  # 0.4 >= tau 0.3 on every response
    assert loaded == [config.guard]
    (run / "config.toml").write_text(dumps(update(config, {"guard": {"path": "none", "kind": "none"}})))
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\n"))
    main(["chat", "--system", str(run), "--max-new-tokens", "3"])
    assert (loaded[1].path, loaded[1].kind) == (str(run / "guard"), "softguard")  # the guard trained into the run


def test_cli_chat_system_needs_a_run_directory(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["chat", "--system", str(tmp_path)])
    out = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 2 and "is not a softguard run directory (no config.toml)" in out
