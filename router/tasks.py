"""Task label for a request: one of :data:`TASKS`, by ordered rules.

A transparent rule list: deterministic, cheap, and each label explained by the
rule that fired. The shipped classifier (router/task_model.py) is learned over
these rules, whose label is one of its features; without its artifact the rules
decide alone. Rules run in priority order and the
first match wins:

1. ``tool_use``: the request declares tools (unless ``tool_choice`` is
   ``"none"``) or carries tool calls/results in its history. Checked first
   because it changes what a cheaper model must get right.
2. ``translation``, ``summarization``, ``classification``, ``extraction``,
   ``rewriting``, ``creative_writing``: explicit instructions ("translate",
   "how do you say this in French", "TL;DR", "reply with the label only",
   "pull out the total", "put this into plain English", ...). In API traffic
   the instruction usually sits in the **system or developer prompt** and the
   user message is only the payload, so that prompt is read first; then the
   edges of the user text (instructions sit at the start or end of a prompt,
   so only the first/last ``INSTRUCTION_WINDOW`` characters are searched — a
   document that merely *mentions* "summary" is not a summarization request).
3. ``code``: fenced code, code-looking lines, or programming vocabulary.
4. ``qa`` for multiple-choice questions (options A/B/C/D).
5. ``math``: LaTeX, equations, "solve"/"calculate", or a word problem with
   several numbers and "how many/much".
6. ``creative_writing``: "write a poem/story/...".
7. ``reasoning``: "step by step", "why", "prove", puzzles, trade-offs.
8. ``qa``: other questions (question mark or leading question word).
9. ``chat``: multi-turn conversations and short conversational messages.
10. ``other``: anything else (including empty requests).
"""

from __future__ import annotations

import re
from functools import lru_cache

from .features import RequestFeatures

TASKS: tuple[str, ...] = (
    "summarization",
    "classification",
    "extraction",
    "translation",
    "rewriting",
    "qa",
    "creative_writing",
    "code",
    "math",
    "reasoning",
    "chat",
    "tool_use",
    "other",
)

INSTRUCTION_WINDOW = 400
_WORD_RE = re.compile(r"\w+")

_LANGS = (
    r"english|spanish|french|german|italian|portuguese|dutch|russian|chinese|mandarin|japanese|korean|arabic|"
    r"hindi|turkish|polish|swedish|greek|hebrew|vietnamese|thai|indonesian|ukrainian|czech|latin"
)
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "translation",
        re.compile(
            r"\btranslat(?:e|ion|ing)\b|\btradu(?:ce|cir|ire|is|za|ci)\b|\bübersetz\w*|\bprzetłumacz\w*|"
            r"\bперевед\w*|翻訳|翻译|번역|"
            rf"\b(?:in|into|to) (?:{_LANGS})\s*[:.?!]?\s*$|\b(?:{_LANGS}),? please\s*[.!?]?\s*$|^\s*(?:{_LANGS}) to (?:{_LANGS})\b|"
            rf"\b(?:from|to) (?:{_LANGS}) (?:to|into) (?:{_LANGS})\b|"
            rf"\bhow (?:do|would|can) (?:you|i|we) say\b.{{0,60}}\bin (?:{_LANGS})\b|"
            rf"\b(?:say|write|put|render|give me) (?:this|that|it|these|the (?:text|message|following))\b.{{0,30}}"
            rf"\b(?:in|into) (?:{_LANGS})\b|\b(?:{_LANGS}) (?:version|equivalent|translation)\b"
        ),
    ),
    (
        "summarization",
        re.compile(
            r"\bsummar(?:ize|ise|izing|ising|y)\b|\btl;?dr\b|\bkey (?:points|takeaways)\b|\bcondense\b|"
            r"\bgist\b|\bin (?:one|a few|two|three|\d+) (?:sentences?|bullets?|words)\b|\brésum(?:e|é|er)\b|\bresumen\b|"
            r"\bresume (?:este|el|la|esta)\b|\bzusammenfass\w*|"
            r"\bboil (?:this|it|that) down\b|\bin a nutshell\b|\brecap\b|\bsum (?:it |this |that )?up\b|"
            r"\b(?:short|brief|quick)(?:er)? (?:version|overview|rundown)\b|\bhighlights\b|\babstract (?:of|for)\b"
        ),
    ),
    (
        "classification",
        re.compile(
            r"\bclassif(?:y|ication|ier)\b|\bcategori[sz]e\b|\bsentiment\b|"
            r"\bwhich (?:category|class|label|team|department|queue|bucket|intent|topic)\b|"
            r"\b(?:label|tag) (?:this|the following|each|it)\b|\bis (?:this|it) (?:spam|toxic|positive|negative)\b|"
            r"\bpositive,? (?:or )?negative\b|\b(?:reply|respond|answer|return|output) with (?:only |just )?"
            r"(?:the|one|a single|a|exactly one) (?:label|category|class|word|tag)\b|\blabel only\b|\bone label\b|"
            r"\bis (?:this|the) (?:ticket|message|email|review|comment|post|request|text) (?:about|a|an)\b|"
            r"\b(?:intent|priority|urgency|severity) (?:of|level|label)\b|\btriage\b|\bspam or (?:not|ham)\b|"
            r"\bsentimiento\b|\bidentify the (?:language|intent|category|topic|sentiment)\b|\brate\b.{0,60}\bscale\b|"
            r"\btag (?:the|each|every|it|this)\b|\b(?:tag|label)s? [a-z ]{0,20}\bby\b"
        ),
    ),
    (
        "extraction",
        re.compile(
            r"\bextract\b|\bpull (?:out )?the\b|\bpull out\b|\bparse\b|\bfind all\b|\blist (?:all|every|the) (?:names|dates|"
            r"entities|emails|people|companies|items|numbers|amounts)\b|\bnamed entit(?:y|ies)\b|"
            r"\bfill (?:in )?the (?:json|schema|fields)\b|\bgrab the\b|\bidentify (?:all |every )?(?:the )?(?:names|dates|"
            r"amounts|entities|people|companies|fields)\b|\breturn (?:a |the )?json (?:object )?with\b|"
            r"\blist (?:every|each|all) (?:action item|item|competitor|product|name|date|person|company|task|"
            r"ingredient|requirement|error|deadline)s?\b"
        ),
    ),
    (
        "rewriting",
        re.compile(
            r"\bre-?write\b|\brephrase\b|\bparaphrase\b|\bproofread\b|\breword\b|\bpolish\b|"
            r"\b(?:fix|correct) (?:the |my )?(?:grammar|spelling|typos)\b|\bmake (?:it|this) (?:more|less|sound)\b|"
            r"\bshorten\b|\bsimplify (?:this|the following)\b|\bedit (?:this|the following|my)\b|"
            r"\bplain (?:english|language|words)\b|\bmore (?:formal|casual|polite|concise|professional|friendly)\b|"
            r"\bless (?:formal|technical|harsh)\b|\bclean (?:this |it )?up\b|\btighten\b|\bcopy-?edit\b|"
            r"\bimprove (?:the )?(?:wording|writing|flow|clarity)\b|\bchange the tone\b|\bpolished\b|"
            r"\bsound (?:less|more)\b|\b(?:british|american) (?:english|spelling)\b|\bpatient-friendly\b"
        ),
    ),
)
# In a system prompt "answer in French" sets the reply's language, not a translation task: there only
# an explicit verb, a language pair or "(the user's text) into <language>" counts.
_SYSTEM_RULES = tuple(
    (task, rx)
    if task != "translation"
    else (
        task,
        re.compile(
            r"\btranslat(?:e|ion|ing|or)\b|\btradu(?:ce|cir|ire|is|za)\b|\bübersetz\w*|\bprzetłumacz\w*|\bперевед\w*|"
            r"翻訳|翻译|번역|"
            rf"\b(?:from|to) (?:{_LANGS}) (?:to|into) (?:{_LANGS})\b|"
            rf"\b(?:message|text|input|content|sentence|it|this)s? (?:in|into) (?:{_LANGS})\b(?! (?:only|always))"
        ),
    )
    for task, rx in _RULES
)
# Gates: a rule's regex only runs when one of these words occurs in the
# request's words (a set lookup); regex alternations over hundreds of
# characters are the expensive part of classification.
_LANG_WORDS = frozenset(_LANGS.split("|"))
_GATES: dict[str, frozenset[str]] = {
    "translation": frozenset(
        "translate translation translating traduce traducir traduire traduis traduza traduci übersetze übersetzen "
        "przetłumacz".split()
    )
    | _LANG_WORDS,
    "summarization": frozenset(
        "summarize summarise summarizing summarising summary tl tldr key condense gist sentence sentences resume "
        "zusammenfassung zusammenfassen "
        "bullet bullets words resume résume résumé résumer resumen boil nutshell recap sum short shorter brief quick "
        "highlights abstract".split()
    ),
    "classification": frozenset(
        "classify classification classifier categorize categorise sentiment which label tag tags labels is "
        "positive reply respond answer return output only intent priority urgency severity triage spam "
        "sentimiento identify rate".split()
    ),
    "extraction": frozenset("extract pull parse find list named fill grab identify return".split()),
    "rewriting": frozenset(
        "rewrite re write rephrase paraphrase proofread reword polish polished fix correct make shorten simplify "
        "edit plain more less clean tighten copyedit copy improve change sound british american patient".split()
    ),
    "code": frozenset(
        "python javascript typescript java golang rust c kotlin swift ruby php bash shell sql regex html css json api "
        "function class method compile compiler compiled stack stacktrace traceback exception refactor unit debug "
        "snippet script repository git dockerfile kubernetes algorithm".split()
    ),
    "math": frozenset(
        "solve calculate compute equation integral derivative differentiate integrate simplify factor factorize "
        "factorise probability matrix polynomial theorem lemma arithmetic algebra geometry evaluate".split()
    ),
    "how_many": frozenset("many much long far old total sum average difference".split()),
    "creative": frozenset(
        "poem story stories haiku limerick song lyrics sonnet fairy fairytale fable screenplay script dialogue novel "
        "chapter joke rap verse slogan tagline essay once slogans taglines fiction subject headline headlines "
        "caption captions description descriptions copy".split()
    ),
    "reasoning": frozenset(
        "step explain prove reason reasoning puzzle riddle logic logical pros trade tradeoff tradeoffs analyze "
        "analyse compare implication implications deduce infer happen justify".split()
    ),
    "puzzle": frozenset("who telling minimum measure option should riddle puzzle".split()),
    "math_extra": frozenset("area perimeter volume circumference square raíz prove".split()),
}
# What a word gate cannot see: stems the regex matches inside longer words ("przetłumaczyć",
# "переведи", "Zusammenfassung") and keywords of scripts written without spaces, where a whole
# sentence is one word ("これを翻訳して"). A gate also opens when the text holds one of these.
_STEMS: dict[str, tuple[str, ...]] = {
    "translation": ("przetłumacz", "перевед", "翻訳", "翻译", "번역", "übersetz"),
    "summarization": ("zusammenfass",),
}


def _phrases(*alternatives: str) -> tuple[tuple[frozenset[str], ...], ...]:
    """Gate alternatives from specs like "which|category class label": every `|`-separated group must
    contribute one of its words."""
    return tuple(tuple(frozenset(group.split()) for group in alt.split("|")) for alt in alternatives)


# Sharper gates for the rules whose single-word gates open on almost any long text ("is", "which",
# "find", "correct"): for each of the regex's alternatives, the words it cannot match without — one of
# each group. Each is a necessary condition of its alternative (tests/router/test_task_gates.py checks it
# against every labelled request), so the regex runs only where it might match.
_PHRASE_GATES: dict[str, tuple[tuple[frozenset[str], ...], ...]] = {
    "classification": _phrases(
        "classify classification classifier categorize categorise sentiment triage sentimiento",
        "which|category class label team department queue bucket intent topic",
        "label tag|this the each it every",
        "is|this it|spam toxic positive negative",
        "positive|negative",
        "reply respond answer return output|with|label category class word tag",
        "label|only one",
        "is|this the|ticket message email review comment post request text",
        "intent priority urgency severity|of level label",
        "spam|or",
        "identify|the|language intent category topic sentiment",
        "rate|scale",
        "tag tags label labels|by",
    ),
    "extraction": _phrases(
        "extract parse",
        "pull|the out",
        "find|all",
        "list|all every the each",
        "named|entity entities",
        "fill|the|json schema fields",
        "grab|the",
        "identify|names dates amounts entities people companies fields",
        "return|json|with",
    ),
    "rewriting": _phrases(
        "rewrite rephrase paraphrase proofread reword polish polished shorten tighten copyedit",
        "re|write",
        "fix correct|grammar spelling typos",
        "make|it this|more less sound",
        "simplify|this the",
        "edit|this the my",
        "plain|english language words",
        "more|formal casual polite concise professional friendly",
        "less|formal technical harsh",
        "clean|up",
        "copy|edit",
        "improve|wording writing flow clarity",
        "change|tone",
        "sound|less more",
        "british american|english spelling",
        "patient|friendly",
    ),
    "code_verb": _phrases("write implement fix debug refactor review optimize optimise explain convert port"),
}


def _gate_open(words: frozenset[str], task: str, text: str = "") -> bool:
    """Whether the task's regex could match a text with these words (`text`: the text itself, for the
    stems no word gate sees)."""
    stems = _STEMS.get(task)
    if stems is not None and text and any(map(text.__contains__, stems)):
        return True
    gates = _PHRASE_GATES.get(task)
    if gates is None:
        return not words.isdisjoint(_GATES[task])
    for alt in gates:  # loops, not any(all(...)): this runs on every proxied call
        for group in alt:
            if words.isdisjoint(group):
                break
        else:
            return True
    return False


_CODE_RE = re.compile(
    r"\b(?:python|javascript|typescript|java|golang|rust|c\+\+|c#|kotlin|swift|ruby|php|bash|shell script|sql|"
    r"regex|html|css|json schema|api endpoint|function|class|method|compile[rd]?|stack ?trace|traceback|"
    r"exception|refactor|unit tests?|debug|snippet|script|repository|git|dockerfile|kubernetes|algorithm)\b"
)
_CODE_VERB_RE = re.compile(r"\b(?:write|implement|fix|debug|refactor|review|optimi[sz]e|explain|convert|port)\b")
_MATH_RE = re.compile(
    r"\b(?:solve|calculate|compute|equation|integral|derivative|differentiate|integrate|simplify|factor(?:ize|ise)?|"
    r"probability|matrix|eigen\w*|polynomial|theorem|lemma|arithmetic|algebra|geometry|evaluate the)\b"
)
_HOW_MANY_RE = re.compile(
    r"\bhow (?:many|much|long|far|old)\b|\bwhat (?:is|was) the (?:total|sum|average|difference)\b"
)
_WORD_PROBLEM_RE = re.compile(
    r"\b(?:average|rate|speed|percent|per|total|cost|costs|profit|each|twice|half|times|miles|hours|minutes|dollars|price)\b|[$%]"
)
_CREATIVE_RE = re.compile(
    r"\b(?:write|compose|create|draft|give me|tell me|generate|come up with|suggest)\b.{0,40}\b(?:poem|story|stories|"
    r"haiku|limerick|song|lyrics|sonnet|fairy ?tale|fable|screenplay|script for a|dialogue|novel|chapter|joke|rap|"
    r"verse|slogans?|taglines?|essay|flash fiction|fiction|subject lines?|headlines?|captions?|"
    r"(?:product|listing|e-commerce|real-estate) descriptions?|(?:landing-page|ad|marketing|web) copy|copy for)\b|"
    r"\b(?:poem|short story|haiku|limerick|sonnet) (?:about|on|for)\b|\bonce upon a time\b"
)
# Only in a system / developer prompt: who the assistant is tells the task there (a code assistant, a
# calculator, a planner), where in a user message it would be mere topic.
_SYSTEM_CODE_RE = re.compile(
    r"\b(?:python|javascript|typescript|react|golang|rust|kotlin|swift|sql|regex|regular expression|yaml|"
    r"bash|shell|pytest|unit tests?|function body|code|programmer|developer|ci configuration|dockerfile)\b"
)
_SYSTEM_REASONING_RE = re.compile(
    r"\bstep by step\b|\breason about\b|\broot cause\b|\bconstraints\b|\bpropose which\b|\bprioriti[sz]e\b|"
    r"\btrade-?offs?\b"
)
_SYSTEM_MATH_RE = re.compile(r"\bcalculat\w*|\bcompute the (?:total|price|amount|tax)\b")
# Puzzles and decisions carry numbers, so they are told before math is.
_PUZZLE_RE = re.compile(
    r"\bwho (?:owns|broke|is lying|stole|did it|is telling)\b|\btelling the truth\b|\bminimum number of\b|"
    r"\bmeasure exactly\b|\bwhich option (?:makes more sense|is better)\b|\bhow should i think about\b|"
    r"\b(?:riddle|puzzle)\b"
)
_MATH_EXTRA_RE = re.compile(
    r"\b(?:area|perimeter|volume|circumference) of (?:a|the|an)\b|\bsquare root\b|\braíz cuadrada\b|"
    r"\bprove that\b.{0,60}\b(?:irrational|prime|divisible|even|odd|integer|infinite)\b"
)
_CHATTY_RE = re.compile(
    r"^\s*(?:do you (?:like|love|enjoy|have)|what'?s your favou?rite|i just (?:got|had|finished|bought))\b"
)
_REASONING_RE = re.compile(
    r"\bstep[- ]by[- ]step\b|\bexplain why\b|\bprove\b|\breason(?:ing)?\b|\bpuzzle\b|\briddle\b|\blogic(?:al)?\b|"
    r"\bpros and cons\b|\btrade-?offs?\b|\banaly[sz]e\b|\bcompare\b|\bimplications?\b|\bdeduce\b|\binfer\b|"
    r"\bwhat would happen\b|\bjustify\b"
)
_QUESTION_START_RE = re.compile(
    r"^\s*(?:what|who|whom|whose|when|where|which|how|is|are|was|were|do|does|did|can|could|should|would|will|"
    r"define|explain|describe|tell me about)\b"
)
_GREETING_RE = re.compile(
    r"^\s*(?:hi|hello|hey|thanks|thank you|good (?:morning|evening|night)|how are you|ok|okay|cool)\b"
)


_NEGATIONS = (" not ", "n't ", " ne ", " no ", " never ", " without ", " cannot ")


def _instruction(rx: re.Pattern[str], text: str) -> re.Match[str] | None:
    """The rule's first match that is not an instruction *not* to do it ("list the action items; do not
    summarize", "ne résume pas")."""
    for m in rx.finditer(text):
        if not (" " + text[max(0, m.start() - 8) : m.start()]).endswith(_NEGATIONS):
            return m
    return None


def _instruction_text(f: RequestFeatures) -> str:
    t = f.user_text
    if len(t) <= 2 * INSTRUCTION_WINDOW:
        return t
    return t[:INSTRUCTION_WINDOW] + "\n" + t[-INSTRUCTION_WINDOW:]


def classify_task(f: RequestFeatures) -> str:
    """The single task label of a request (see module docstring for the rules)."""
    if (f.has_tools and f.tool_choice != "none") or f.has_tool_results:
        return "tool_use"
    text = f.user_text
    if not text.strip() and not f.system_text:
        return "other"
    system = f.system_text
    if system:  # the API shape: the instruction in the system prompt, the payload in the user message
        task = _system_task(system)
        if task is not None:
            return task
    if not text.strip():
        return "other"
    instr = _instruction_text(f)
    ws = frozenset(f.words)
    for task, rx in _RULES:
        if _gate_open(ws, task, instr) and _instruction(rx, instr):
            return task
    if (
        f.n_code_blocks
        or f.n_code_lines >= 3
        or (
            not ws.isdisjoint(_GATES["code"])
            and _gate_open(ws, "code_verb")
            and _CODE_RE.search(instr)
            and _CODE_VERB_RE.search(instr)
        )
    ):
        return "code"
    if f.n_choices >= 3:
        return "qa"
    if _gate_open(ws, "puzzle") and _PUZZLE_RE.search(instr):
        return "reasoning"
    if (
        (_gate_open(ws, "math_extra") and _MATH_EXTRA_RE.search(instr))
        or f.has_latex
        or (not ws.isdisjoint(_GATES["math"]) and _MATH_RE.search(instr))
        or (f.n_numbers >= 2 and f.n_math_symbols >= 1 and f.n_words <= 12)
        or (f.n_numbers >= 1 and not ws.isdisjoint(_GATES["how_many"]) and _HOW_MANY_RE.search(text))
        or (f.n_numbers >= 2 and f.n_question_marks and _WORD_PROBLEM_RE.search(text))
    ):
        return "math"
    if not ws.isdisjoint(_GATES["creative"]) and _CREATIVE_RE.search(instr):
        return "creative_writing"
    if not ws.isdisjoint(_GATES["reasoning"]) and _REASONING_RE.search(instr):
        return "reasoning"
    if _CHATTY_RE.search(text):
        return "chat"
    if f.n_question_marks or _QUESTION_START_RE.search(text):
        return "qa"
    if f.n_assistant_turns >= 1 or _GREETING_RE.search(text) or f.n_words <= 12:
        return "chat"
    return "other"


_SYSTEM_CHECKS = (
    *_SYSTEM_RULES,
    ("creative_writing", _CREATIVE_RE),
    ("code", _SYSTEM_CODE_RE),
    ("reasoning", _SYSTEM_REASONING_RE),
    ("math", _SYSTEM_MATH_RE),
)


@lru_cache(maxsize=512)
def _system_task(system: str) -> str | None:
    """The task a system prompt sets: of the instructions it holds, the one it states first (memoised: an
    application sends the same system prompt with every call)."""
    words = frozenset(_WORD_RE.findall(system))
    best: tuple[int, str] | None = None
    for task, rx in _SYSTEM_CHECKS:
        gate = _GATES.get("creative" if task == "creative_writing" else task)
        if task in ("code", "reasoning", "math"):
            gate = None  # short regexes on a short text: no gate needed
        if (
            gate is not None
            and words.isdisjoint(gate)
            and not (task == "translation" and "translator" in words)
            and not any(map(system.__contains__, _STEMS.get(task, ())))
        ):
            continue
        m = _instruction(rx, system)
        if m is not None and (best is None or m.start() < best[0]):
            best = (m.start(), task)
    return None if best is None else best[1]
