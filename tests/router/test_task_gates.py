"""The task rules' word gates only ever skip a regex that could not have matched, and do not hide
keywords that are not words of their own (inflected stems, scripts written without spaces)."""

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
    "Who owns the zebra?", "Is she telling the truth?", "the minimum number of weighings",
    "measure exactly 4 litres", "which option is better", "how should I think about it", "a riddle for you",
    "area of a circle", "the square root of 2", "la raíz cuadrada de 9", "prove that sqrt 2 is irrational",
]  # fmt: skip
# Requests whose instruction the word gates alone would miss; each is (text, task).
UNSPACED = [
    ("これを英語に翻訳してください: おはよう", "translation"),
    ("把这句话翻译成英文：早上好", "translation"),
    ("이 문장을 번역해 주세요: 안녕하세요", "translation"),
    ("переведи на английский: привет", "translation"),
    ("Przetłumaczyć to zdanie: dzień dobry", "translation"),
    ("Bitte übersetzt diesen Satz: guten Morgen", "translation"),
    ("Eine Zusammenfassung bitte: Der Bericht beschreibt drei Regionen und ihre Zahlen.", "summarization"),
]
REGEXES = {"code_verb": tasks._CODE_VERB_RE, "puzzle": tasks._PUZZLE_RE, "math_extra": tasks._MATH_EXTRA_RE}


def _requests() -> list[dict]:
    bodies = [
        {"model": "gpt-4o", "messages": [{"role": "user", "content": p}]} for p in [*PHRASES, *(t for t, _ in UNSPACED)]
    ]
    for name in SETS:
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                bodies.append(json.loads(line)["body"])
    with open(DATA / "routellm_train.jsonl", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i % 5 == 0:
                bodies.append({"model": "gpt-4o", "messages": json.loads(line)["messages"]})
    return bodies


@pytest.mark.parametrize("task", [*dict(tasks._RULES), "code_verb", "puzzle", "math_extra"])
def test_a_closed_gate_never_hides_a_match(task: str) -> None:
    rx = REGEXES.get(task) or dict(tasks._RULES)[task]
    matched = 0
    for body in _requests():
        f = extract_features(body)
        instr = tasks._instruction_text(f)
        if rx.search(instr):
            matched += 1
            assert tasks._gate_open(frozenset(f.words), task, instr), (task, instr[:200])
    assert matched >= 5  # the check saw the rule fire, not only texts it skips


@pytest.mark.parametrize("text,task", UNSPACED)
def test_instructions_that_are_not_words_of_their_own(text: str, task: str) -> None:
    f = extract_features({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]})
    assert tasks.classify_task(f) == task
    system = extract_features(
        {"model": "gpt-4o", "messages": [{"role": "system", "content": text}, {"role": "user", "content": "…"}]}
    )
    assert tasks.classify_task(system) == task  # the same instruction in a system prompt


def test_gates_skip_texts_that_merely_share_a_word() -> None:
    f = extract_features({"messages": [{"role": "user", "content": "Which is the correct answer? Find it."}]})
    ws = frozenset(f.words)
    assert not tasks._gate_open(ws, "classification")
    assert not tasks._gate_open(ws, "extraction")
    assert not tasks._gate_open(ws, "rewriting")


@pytest.mark.parametrize(
    "text,task",
    [
        ("Extract the invoice dates from this email. Do not summarize it.", "extraction"),
        ("Liste les actions assignées. Ne résume pas la discussion.", None),
        ("This inequality does not translate into political instability. Why?", "qa"),
        ("Don't rewrite anything: classify the sentiment of this review.", "classification"),
    ],
)
def test_an_instruction_not_to_do_a_task_is_not_that_task(text: str, task: str | None) -> None:
    f = extract_features({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]})
    got = tasks.classify_task(f)
    assert got not in ("summarization", "translation", "rewriting")
    if task is not None:
        assert got == task
