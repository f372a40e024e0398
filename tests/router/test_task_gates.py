"""The task rules' word gates only ever skip a regex that could not have matched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from turnout.router import tasks
from turnout.router.features import extract_features

DATA = Path(tasks.__file__).parent / "data"
SETS = ("task_eval_api.jsonl", "task_train_api.jsonl", "task_train_api_more.jsonl", "task_train_api_third.jsonl")

PHRASES = [
    "Classify this ticket.", "Which category does it belong to?", "Label this review", "Tag each line by topic",
    "Is this spam?", "positive or negative", "Reply with only the label.", "Answer with one word.",
    "label only", "one label please", "Is this ticket about billing?", "What is the priority level?",
    "spam or ham", "Identify the language of this text.", "Rate it on a scale of 1 to 5", "labels sorted by team",
    "Extract the dates", "Pull out the invoice number", "pull the total", "find all emails",
    "List all names mentioned", "list every action item", "named entities here", "fill in the JSON fields",
    "grab the address", "identify the companies", "return a json object with name and age",
    "Re-write this", "rewrite it", "Fix my grammar", "correct the spelling", "make it more formal",
    "simplify the following", "edit my email", "in plain English", "more concise please", "less technical",
    "clean it up", "copy-edit this", "improve the flow", "change the tone", "sound less harsh",
    "British spelling", "patient-friendly wording", "polish this paragraph",
]  # fmt: skip


def _requests() -> list[dict]:
    bodies = [{"model": "gpt-4o", "messages": [{"role": "user", "content": p}]} for p in PHRASES]
    for name in SETS:
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                bodies.append(json.loads(line)["body"])
    with open(DATA / "routellm_train.jsonl", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i % 5 == 0:
                bodies.append({"model": "gpt-4o", "messages": json.loads(line)["messages"]})
    return bodies


@pytest.mark.parametrize("task", sorted(tasks._PHRASE_GATES))
def test_a_closed_gate_never_hides_a_match(task: str) -> None:
    rules = dict(tasks._RULES)
    rx = tasks._CODE_VERB_RE if task == "code_verb" else rules[task]
    matched = 0
    for body in _requests():
        f = extract_features(body)
        instr = tasks._instruction_text(f)
        if rx.search(instr):
            matched += 1
            assert tasks._gate_open(frozenset(f.words), task), (task, instr[:200])
    assert matched >= 20  # the check saw the rule fire, not only texts it skips


def test_gates_skip_texts_that_merely_share_a_word() -> None:
    f = extract_features({"messages": [{"role": "user", "content": "Which is the correct answer? Find it."}]})
    ws = frozenset(f.words)
    assert not tasks._gate_open(ws, "classification")
    assert not tasks._gate_open(ws, "extraction")
    assert not tasks._gate_open(ws, "rewriting")
