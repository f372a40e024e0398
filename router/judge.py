"""The LLM judge for free-text answers: pairwise, asked in both orders to cancel position bias.

The prompt is short and versioned (`router/prompts/judge-v1.txt`; the version is recorded with
each verdict). Verdict: the candidate is "as good as" the reference when the judge prefers it or
calls a tie in both orders (`pass`); the reference wins both (`fail`); the orders disagree — the
judge picked a position, not an answer — `tie`; an answer that is not A, B or TIE: `unknown`.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal

from .comparators import Verdict

VERSION = "judge-v1"
MAX_CHARS = 6000  # of the request and of each answer: a bounded judge call
Choice = Literal["A", "B", "TIE"]
_CHOICE = re.compile(r"\b(A|B|TIE)\b")


@cache
def prompt() -> str:
    return (Path(__file__).parent / "prompts" / f"{VERSION}.txt").read_text().strip()


def _clip(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 20] + "\n[… clipped]"


def question(request_text: str, answer_a: str, answer_b: str) -> str:
    """The user turn of a judge call: the request, then the two answers, each fenced."""
    return (
        f"<request>\n{_clip(request_text)}\n</request>\n\n"
        f"<answer_A>\n{_clip(answer_a)}\n</answer_A>\n\n"
        f"<answer_B>\n{_clip(answer_b)}\n</answer_B>\n\n"
        "Which answer is better? Reply A, B or TIE."
    )


def parse_choice(text: str | None) -> Choice | None:
    """A, B or TIE from the judge's reply (the first one it names); None when it names none."""
    if not text:
        return None
    m = _CHOICE.search(text.strip().upper())
    return m.group(1) if m else None  # type: ignore[return-value]


def pairwise(reference_first: Choice | None, candidate_first: Choice | None) -> Verdict:
    """Combine the two orders: A = reference, B = candidate; then A = candidate, B = reference."""
    if reference_first is None or candidate_first is None:
        return Verdict("unknown", "judge", "the judge's answer did not parse")
    ok_1 = reference_first in ("B", "TIE")  # the candidate (B) is as good
    ok_2 = candidate_first in ("A", "TIE")  # the candidate (A) is as good
    detail = f"{VERSION}: ref-first {reference_first}, cand-first {candidate_first}"
    if ok_1 and ok_2:
        return Verdict("pass", "judge", detail)
    if not ok_1 and not ok_2:
        return Verdict("fail", "judge", detail)
    return Verdict("tie", "judge", detail + " (the orders disagree)")
