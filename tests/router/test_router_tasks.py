"""Task labels for representative prompts of every task."""

from __future__ import annotations

import pytest

from turnout.router.features import extract_features
from turnout.router.tasks import TASKS, classify_task


def task_of(content, **extra):
    return classify_task(
        extract_features({"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **extra})
    )


CASES = [
    (
        "summarization",
        "Summarize the following article in three bullet points:\n\nThe city council met on Tuesday to discuss...",
    ),
    ("summarization", "Here is the meeting transcript. " + "We discussed the roadmap. " * 60 + "\nTL;DR please."),
    (
        "classification",
        "Classify the sentiment of this review as positive, negative or neutral: 'The battery died in a day.'",
    ),
    ("extraction", "Extract all person names and dates from this email: Hi Bob, meet Alice on 3 May."),
    ("translation", "Translate into French: Where is the train station?"),
    ("translation", "How do you say 'good morning' in Japanese?"),
    ("rewriting", "Rewrite this paragraph to sound more formal: hey guys, the meeting is moved to 3."),
    ("rewriting", "Proofread my cover letter and fix the grammar: I has worked at Acme for 3 year."),
    ("qa", "What is the capital of Australia?"),
    ("qa", "Which of these is a prime number?\nA. 21\nB. 27\nC. 29\nD. 33\nAnswer:"),
    ("creative_writing", "Write a short poem about autumn leaves falling in the rain."),
    ("creative_writing", "Tell me a story about a dragon who is afraid of heights."),
    ("code", "Write a Python function that returns the n-th Fibonacci number."),
    ("code", "Why does this crash?\n```js\nconst x = null;\nx.foo();\n```"),
    ("math", "Solve for x: 3x + 7 = 22."),
    ("math", "Janet has 16 eggs. She eats 3 and bakes with 4. How many eggs are left?"),
    ("math", "Compute the integral of x^2 from 0 to 3."),
    ("reasoning", "Explain step by step whether a company should build or buy its CRM, weighing the trade-offs."),
    ("reasoning", "Here is a logic puzzle: three boxes are all mislabeled. Which box do you open first?"),
    ("chat", "hi there!"),
    ("other", ""),
]


@pytest.mark.parametrize("expected,content", CASES)
def test_representative_prompts(expected, content):
    assert task_of(content) == expected


def test_tool_use_and_all_tasks_covered():
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    assert task_of("What's the weather in Paris?", tools=tools) == "tool_use"
    assert task_of("What's the weather in Paris?", tools=tools, tool_choice="none") == "qa"
    history = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]},
            {"role": "tool", "content": "sunny", "tool_call_id": "1"},
        ],
    }
    assert classify_task(extract_features(history)) == "tool_use"
    assert {e for e, _ in CASES} | {"tool_use"} == set(TASKS)


def test_multi_turn_chat_and_determinism():
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "I had a long day at work"},
            {"role": "assistant", "content": "Sorry to hear that. Want to talk about it?"},
            {"role": "user", "content": "yeah my boss keeps moving deadlines around"},
        ],
    }
    assert classify_task(extract_features(body)) == "chat"
    assert len({classify_task(extract_features(body)) for _ in range(5)}) == 1


def test_document_that_mentions_summary_is_not_summarization():
    filler = "Revenue grew in every region. " * 40
    doc = filler + "A quarterly summary of sales figures was circulated. " + filler
    assert task_of(doc + "\nWhat was the trend in revenue?") == "qa"


def test_task_accuracy_on_api_style_requests_holds():
    """The API-style set (written apart from the rules): the tuning half and the held-out half."""
    from turnout.router.task_eval import task_accuracy

    rules = task_accuracy(rules_only=True)
    assert rules["tuning"].n + rules["held-out"].n == 260
    assert rules["tuning"].accuracy >= 0.9  # the rules were tuned looking at this half
    assert rules["held-out"].accuracy >= 0.6, rules["held-out"].confusions[:8]  # the honest number (0.26 before)
    learned = task_accuracy()  # the shipped learned model over the rules: trained on other rows and the tuning half
    assert learned["held-out"].accuracy >= 0.75, learned["held-out"].confusions[:8]
