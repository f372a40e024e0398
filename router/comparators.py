"""Is the cheaper model's answer as good as the reference? The cheap checks first, a judge last.

`compare` picks the comparator from the request and both answers — refusals and a truncated
answer fail outright; tool calls compare names and arguments; JSON mode parses, validates against
the schema and compares field by field; math compares the final number; a short answer (a label,
a letter, yes/no, an extracted field) compares normalised text — for label-like tasks only (free text, however short,
such as a translated greeting, is the judge's). Free text returns None: that is
the LLM judge's (router/judge.py), and without one the verdict is `unknown`, never a guess.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

from turnout.ledger.messages import Part

VerdictName = Literal["pass", "fail", "tie", "unknown"]
SHORT_WORDS = 5  # a reference this short is a label / letter / field: compared exactly
SHORT_CHARS = 48
_TRUNCATED = frozenset({"length", "max_tokens", "max_output_tokens", "incomplete"})
_REFUSED = frozenset({"refusal", "content_filter"})


@dataclass(frozen=True)
class Verdict:
    verdict: VerdictName
    comparator: str  # exact | numeric | json | tool_calls | finish | refusal | judge | none
    detail: str  # why, short


@dataclass(frozen=True)
class Said:
    """One answer as the comparators read it."""

    text: str
    tool_calls: tuple[tuple[str, str], ...]  # (name, arguments JSON)
    finish: str | None
    refused: bool


def said(parts: list[Part], finish: str | None) -> Said:
    text = "\n".join(p.text for p in parts if p.kind == "text" and p.type != "refusal" and p.text)
    calls = tuple((p.name or "", p.text) for p in parts if p.kind == "tool_call")
    refused = any(p.type == "refusal" for p in parts) or (finish or "") in _REFUSED
    return Said(text.strip(), calls, finish, refused)


def compare(
    request: dict[str, Any], reference: Said, candidate: Said, *, task: str | None = None, tool_args: str = "exact"
) -> Verdict | None:
    """The verdict on `candidate` against `reference` for `request`; None when only a judge can tell."""
    if candidate.refused and not reference.refused:
        return Verdict("fail", "refusal", "the candidate refused; the reference answered")
    if reference.refused and not candidate.refused:
        return Verdict("fail", "refusal", "the reference refused; the candidate answered")
    cut_c, cut_r = (candidate.finish or "") in _TRUNCATED, (reference.finish or "") in _TRUNCATED
    if cut_c and not cut_r:
        return Verdict("fail", "finish", f"finish_reason {candidate.finish} vs {reference.finish}")
    if reference.tool_calls or candidate.tool_calls:
        return _tool_calls(reference.tool_calls, candidate.tool_calls, keys_only=tool_args == "keys")
    schema_kind, schema = json_mode(request)
    if schema_kind is not None:
        return _json(reference.text, candidate.text, schema)
    if task == "math" and final_number(reference.text) is not None:
        return _numeric(reference.text, candidate.text)  # (a "math" answer without a number is compared as text)
    if _label_like(reference.text, candidate.text, task):
        return _exact(reference.text, candidate.text)
    return None


# Tasks whose short answers are still free text ("Bonne nuit." vs "Bonne soirée.", "Paris." vs "It's Paris"):
# a judge tells those, not a string comparison.
_FREE_TEXT_TASKS = frozenset({"translation", "rewriting", "creative_writing", "chat", "summarization", "reasoning"})


def _label_like(ref_text: str, cand_text: str, task: str | None) -> bool:
    """A label, a letter, yes/no or a field: the reference is short and so is the candidate (for
    classification and extraction the candidate may ramble: the label must still be it)."""
    ref, cand = normalise(ref_text), normalise(cand_text)
    if not ref or len(ref.split()) > SHORT_WORDS or len(ref) > SHORT_CHARS or task in _FREE_TEXT_TASKS:
        return False
    return task in ("classification", "extraction") or len(cand.split()) <= SHORT_WORDS


# -- tool calls ----------------------------------------------------------------------------------


def _tool_calls(ref: tuple[tuple[str, str], ...], cand: tuple[tuple[str, str], ...], *, keys_only: bool) -> Verdict:
    if sorted(n for n, _ in ref) != sorted(n for n, _ in cand):
        return Verdict("fail", "tool_calls", f"tools {sorted(n for n, _ in ref)} vs {sorted(n for n, _ in cand)}"[:200])
    remaining = [(n, _parse(a)) for n, a in cand]
    for name, args in ((n, _parse(a)) for n, a in ref):
        match = next(
            (i for i, (n, a) in enumerate(remaining) if n == name and _same_args(args, a, keys_only)),
            None,
        )
        if match is None:
            return Verdict("fail", "tool_calls", f"{name}: arguments differ")
        remaining.pop(match)
    return Verdict("pass", "tool_calls", f"{len(ref)} call(s), same tools and {'keys' if keys_only else 'arguments'}")


def _same_args(a: Any, b: Any, keys_only: bool) -> bool:
    if keys_only:
        return isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b)
    return _canon(a) == _canon(b)


def _parse(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return text


def _canon(value: Any) -> Any:
    """JSON-equal: numbers as floats, strings trimmed, keys in any order."""
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canon(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return value.strip()
    return value


# -- JSON mode -----------------------------------------------------------------------------------


def json_mode(request: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """('json_schema', schema) / ('json_object', None) when the request asks for JSON, else (None, None)."""
    fmt = request.get("response_format")
    if not isinstance(fmt, dict):
        text = request.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None  # Responses API
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return None, None
    if fmt["type"] == "json_object":
        return "json_object", None
    holder = fmt.get("json_schema") if isinstance(fmt.get("json_schema"), dict) else fmt
    schema = holder.get("schema")
    return "json_schema", schema if isinstance(schema, dict) else None


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def _load_json(text: str) -> tuple[bool, Any]:
    m = _FENCE.match(text)
    try:
        return True, json.loads(m.group(1) if m else text)
    except (ValueError, RecursionError):
        return False, None


def _json(ref_text: str, cand_text: str, schema: dict[str, Any] | None) -> Verdict:
    ok_c, cand = _load_json(cand_text)
    if not ok_c:
        return Verdict("fail", "json", "the candidate's answer is not JSON")
    ok_r, ref = _load_json(ref_text)
    if not ok_r:
        return Verdict("unknown", "json", "the reference's answer is not JSON")
    if schema is not None:
        import jsonschema

        try:
            jsonschema.validate(cand, schema)
        except jsonschema.ValidationError as e:
            return Verdict("fail", "json", f"schema: {e.message}"[:200])
        except jsonschema.SchemaError as e:
            return Verdict("unknown", "json", f"the request's schema is invalid: {e.message}"[:200])
    if isinstance(ref, dict) and isinstance(cand, dict):
        differ = sorted(k for k in set(ref) | set(cand) if _field(ref.get(k)) != _field(cand.get(k)))
        if differ:
            return Verdict("fail", "json", f"fields differ: {', '.join(differ)}"[:200])
        return Verdict("pass", "json", f"{len(ref)} field(s) agree")
    return Verdict("pass", "json", "equal") if _field(ref) == _field(cand) else Verdict("fail", "json", "values differ")


def _field(value: Any) -> Any:
    if isinstance(value, str):
        return normalise(value)
    return _canon(value)


# -- numbers and short answers -------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")


def final_number(text: str) -> float | None:
    """The last number in a text (`\\boxed{…}` first), commas as thousands separators."""
    boxed = re.findall(r"\\boxed\{([^}]*)\}", text)
    for source in (boxed[-1] if boxed else "", text):
        found = _NUMBER.findall(source)
        if found:
            try:
                return float(found[-1].replace(",", ""))
            except ValueError:
                continue
    return None


def _numeric(ref_text: str, cand_text: str) -> Verdict:
    ref, cand = final_number(ref_text), final_number(cand_text)
    if ref is None:
        return Verdict("unknown", "numeric", "the reference gives no number")
    if cand is None:
        return Verdict("fail", "numeric", f"the candidate gives no number (reference {ref:g})")
    if math.isclose(ref, cand, rel_tol=1e-6, abs_tol=1e-9):
        return Verdict("pass", "numeric", f"both {ref:g}")
    return Verdict("fail", "numeric", f"{cand:g} vs {ref:g}")


_LEAD = re.compile(r"^(?:the\s+)?(?:final\s+)?(?:answer|label|category|result|sentiment)\s*(?:is|:)\s*", re.I)
_CHOICE = re.compile(r"^\(?([a-j])\)?(?:[.):\s]|$)", re.I)


def normalise(text: str) -> str:
    """Case, accents' composition, surrounding punctuation and quotes, and a leading 'Answer:' aside."""
    t = unicodedata.normalize("NFKC", text).strip().casefold()
    t = _LEAD.sub("", t)
    t = re.sub(r"\s+", " ", t).strip(" \t\n\"'`*.,;:!?()[]{}")
    return t


def _exact(ref_text: str, cand_text: str) -> Verdict:
    ref, cand = normalise(ref_text), normalise(cand_text)
    if ref == cand:
        return Verdict("pass", "exact", f"both {ref!r}"[:200])
    letter_r, letter_c = _CHOICE.match(ref), _CHOICE.match(cand)
    if letter_r and letter_c and (len(ref) <= 3 or len(cand) <= 3):  # "B" vs "B) Paris"
        same = letter_r.group(1) == letter_c.group(1)
        return Verdict("pass" if same else "fail", "exact", f"choice {letter_c.group(1)} vs {letter_r.group(1)}")
    first_r, first_c = ref.split(" ", 1)[0], cand.split(" ", 1)[0]
    if first_r in ("yes", "no") and first_c.strip(",.") in ("yes", "no"):
        same = first_r == first_c.strip(",.")
        return Verdict("pass" if same else "fail", "exact", f"{first_c.strip(',.')} vs {first_r}")
    return Verdict("fail", "exact", f"{cand[:60]!r} vs {ref[:60]!r}")
