"""Who and what a call is for: identity fields, config rules, and the prompt-template fingerprint.

Pure functions over a parsed request body and lower-cased headers — no proxy needed to test them.

Precedence per column: explicit `x-turnout-*` header > `[attribution]` config (key labels,
feature rules) > body fields (`safety_identifier` / `user`, `metadata`) > automatic (the
template name, for `feature` only, unless `auto_feature = false`).

`team` is a tenant, not only a label — team budgets and `turnout_cache_scope=team` act on it — so a
client must not be able to pick one: what the config says (the key's label, then a rule's team)
beats the client's `x-turnout-team` header and body `metadata.team`, which only name the team of
traffic the config says nothing about. With `trust_headers = true` (a trusted gateway in front sets
the header) the header comes first. `team_source` records which one decided: key, rule, trusted_header, header, body.

The template fingerprint groups calls from the same code path without anyone tagging them:
the system prompt (plus the first user message's fixed lead-in, e.g. "Summarise this ticket:")
with its variable parts — numbers, ids, uuids, hex, quoted values, e-mail addresses, URLs,
dates, long literals — replaced by placeholders, hashed. Its readable name is the first words,
e.g. `you-are-a-support-agent`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from .messages import request_parts, text_of

# Only the head of a huge system prompt takes part: enough to tell templates apart, bounded cost.
MAX_TEMPLATE_CHARS = 8000
NAME_WORDS = 5

# Order matters: the specific shapes go first, so an e-mail is not cut into words and numbers.
_VARIABLE_PARTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b[a-z][a-z0-9+.-]{1,15}://[^\s\"'<>)\]]+", re.I), "<url>"),
    (re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+"), "<email>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"), "<date>"),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b"), "<time>"),
    # quoted values: "…", '…', “…”, `…` (short, single-line)
    (
        re.compile(r"\"[^\"\n]{0,200}\"|“[^”\n]{0,200}”|‘[^’\n]{0,200}’|`[^`\n]{0,200}`|(?<!\w)'[^'\n]{0,200}'(?!\w)"),
        "<q>",
    ),
    # ids: hex runs, and tokens mixing letters and digits (order ids, api keys, base64)
    (re.compile(r"(?<![\w-])(?:0x[0-9a-f]+|(?=[0-9]*[a-f])[0-9a-f]{8,})(?![\w-])", re.I), "<id>"),
    (re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[a-z])[\w-]{6,}(?![\w-])", re.I), "<id>"),
    (re.compile(r"[^\s]{40,}"), "<lit>"),  # long literals: blobs, paths, tokens
    (re.compile(r"[#$€£]?[-+]?\d(?:[\d,._]*\d)?%?"), "<n>"),
]
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[a-z][a-z']*", re.I)
# The fixed lead-in of a user message: a first line/paragraph ending in ':' or followed by a blank line.
_LEAD_IN = re.compile(r"\A\s*(.{1,300}?)(?::\s*\n|:\s+(?=[\"'`“<\[{])|\n\s*\n)", re.S)


def normalise_template(text: str) -> str:
    """Replace the variable parts of a prompt with placeholders and collapse whitespace."""
    text = text[:MAX_TEMPLATE_CHARS]
    for pattern, placeholder in _VARIABLE_PARTS:
        text = pattern.sub(placeholder, text)
    return _SPACE.sub(" ", text).strip()


def template_name(normalised: str) -> str:
    """`you-are-a-support-agent`: the first words of the template, placeholders skipped."""
    words = [w.lower().replace("'", "") for w in _WORD.findall(re.sub(r"<\w+>", " ", normalised))]
    return "-".join(w for w in words[:NAME_WORDS] if w) or "untitled"


class Template(NamedTuple):
    fp: str
    name: str


@lru_cache(maxsize=4096)
def template_of(system: str, lead_in: str) -> Template | None:
    """Fingerprint of (system prompt, user lead-in); cached, as the same prompts repeat on every call."""
    norm_system = normalise_template(system) if system else ""
    norm_lead = normalise_template(lead_in) if lead_in else ""
    if not norm_system and not norm_lead:
        return None
    digest = hashlib.sha256(f"{norm_system}\x00{norm_lead}".encode()).hexdigest()[:16]
    return Template(digest, template_name(norm_system or norm_lead))


def prompt_parts(body: Any) -> tuple[str, str]:
    """(system prompt text, first user message text) of any request shape turnout parses."""
    parts = request_parts(body)
    system = text_of([p for p in parts if p.role in ("system", "developer")])
    first = next((p.msg for p in parts if p.role == "user"), None)
    user = "" if first is None else (text_of([p for p in parts if p.msg == first and p.role == "user"]) or " ")
    return system, user.strip()


def lead_in(user_text: str) -> str:
    """The fixed lead-in of a user message ('Summarise this ticket:'), or '' when it is all data."""
    m = _LEAD_IN.match(user_text)
    return m.group(1).strip() if m else ""


def template_for(body: Any) -> Template | None:
    system, user = prompt_parts(body)
    return template_of(system, lead_in(user) if user else "")


def _str(value: Any, limit: int = 200) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()[:limit]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


class BodyIdentity(NamedTuple):
    user: str | None
    feature: str | None
    team: str | None
    project: str | None


def identity_from_body(body: Any) -> BodyIdentity:
    """`safety_identifier` (or the older `user`) and `metadata.{user,feature,team,project}` of a request."""
    if not isinstance(body, dict):
        return BodyIdentity(None, None, None, None)
    meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    user = (
        _str(body.get("safety_identifier"))
        or _str(body.get("user"))
        or _str(meta.get("user"))
        or _str(meta.get("user_id"))
    )
    return BodyIdentity(user, _str(meta.get("feature")), _str(meta.get("team")), _str(meta.get("project")))


@dataclass(frozen=True)
class FeatureRule:
    """`[[attribution.features]]`: every given condition must hold; the first matching rule wins."""

    feature: str | None
    team: str | None = None
    path: str | None = None  # glob on the request path, e.g. "/v1/embeddings*"
    model: str | None = None  # glob on the requested model, e.g. "gpt-4o*"
    system: re.Pattern[str] | None = None  # regex searched in the system prompt
    template: str | None = None  # a template fingerprint or name (glob)

    def matches(self, path: str, model: str | None, system: str, template: Template | None) -> bool:
        if self.path is not None and not fnmatch.fnmatchcase(path.split("?", 1)[0], self.path):
            return False
        if self.model is not None and not (model and fnmatch.fnmatchcase(model, self.model)):
            return False
        if self.template is not None:
            if template is None or not (
                template.fp == self.template or fnmatch.fnmatchcase(template.name, self.template)
            ):
                return False
        if self.system is not None and not self.system.search(system):
            return False
        return True


@dataclass(frozen=True)
class AttributionConfig:
    keys: dict[str, str]  # api key fingerprint (or its 12-hex prefix) → team
    rules: tuple[FeatureRule, ...] = ()
    auto_feature: bool = True  # no other source: feature = the template name
    trust_headers: bool = False  # x-turnout-team beats the config (a trusted gateway sets it)

    def team_for_key(self, fp: str | None) -> str | None:
        if not fp:
            return None
        return self.keys.get(fp) or self.keys.get(fp.split("-", 1)[0])


def parse_attribution(table: dict[str, Any]) -> AttributionConfig:
    """The `[attribution]` table; raises ValueError naming the bad entry."""
    unknown = set(table) - {"keys", "features", "auto_feature", "trust_headers"}
    if unknown:
        raise ValueError(f"[attribution]: unknown key(s) {sorted(unknown)}")
    keys = table.get("keys", {})
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise ValueError('[attribution] keys must be a table of "<api key fingerprint>" = "team"')
    rules = []
    for i, spec in enumerate(table.get("features", []) or []):
        where = f"[[attribution.features]] #{i + 1}"
        if not isinstance(spec, dict):
            raise ValueError(f"{where} must be a table")
        unknown = set(spec) - {"feature", "team", "path", "model", "system", "template"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")
        if not spec.get("feature") and not spec.get("team"):
            raise ValueError(f"{where}: needs feature (or team)")
        if not any(k in spec for k in ("path", "model", "system", "template")):
            raise ValueError(f"{where}: needs at least one of path, model, system, template")
        for k in ("feature", "team", "path", "model", "system", "template"):
            if k in spec and not isinstance(spec[k], str):
                raise ValueError(f"{where}: {k} must be a string")
        try:
            system = re.compile(spec["system"], re.I) if "system" in spec else None
        except re.error as e:
            raise ValueError(f"{where}: bad system regex {spec['system']!r}: {e}") from None
        rules.append(
            FeatureRule(
                feature=spec.get("feature"),
                team=spec.get("team"),
                path=spec.get("path"),
                model=spec.get("model"),
                system=system,
                template=spec.get("template"),
            )
        )
    auto = table.get("auto_feature", True)
    trust = table.get("trust_headers", False)
    if not isinstance(auto, bool) or not isinstance(trust, bool):
        raise ValueError("[attribution] auto_feature and trust_headers must be true or false")
    return AttributionConfig(keys=dict(keys), rules=tuple(rules), auto_feature=auto, trust_headers=trust)


TRUSTED_TEAM_SOURCES = frozenset({"key", "rule", "trusted_header"})


def team_of(
    header: str | None, rule_team: str | None, key_team: str | None, body_team: str | None, trust_headers: bool
) -> tuple[str | None, str | None]:
    """(team, source): the config before the client unless the client's header is trusted."""
    if trust_headers:
        order = [("trusted_header", header), ("key", key_team), ("rule", rule_team), ("body", body_team)]
    else:
        order = [("key", key_team), ("rule", rule_team), ("header", header), ("body", body_team)]
    return next(((team, source) for source, team in order if team), (None, None))


def attribute(
    *,
    path: str,
    model: str | None,
    body: Any,
    headers: dict[str, str],
    api_key_fp: str | None,
    config: AttributionConfig,
) -> dict[str, Any]:
    """The attribution columns of one request. `headers` are lower-cased."""
    system, user_text = prompt_parts(body)
    template = template_of(system, lead_in(user_text) if user_text else "")
    ident = identity_from_body(body)
    rule = next((r for r in config.rules if r.matches(path, model, system, template)), None)

    def header(name: str) -> str | None:
        return _str(headers.get(name))

    feature = header("x-turnout-feature") or (rule and rule.feature) or ident.feature
    if feature is None and config.auto_feature and template is not None:
        feature = template.name
    team, team_source = team_of(
        header("x-turnout-team"),
        rule.team if rule else None,
        config.team_for_key(api_key_fp),
        ident.team,
        config.trust_headers,
    )
    return {
        "feature": feature,
        "team": team,
        "team_source": team_source,
        "user": header("x-turnout-user") or ident.user,
        "project": header("openai-project") or ident.project,
        "organization": header("openai-organization"),
        "template_fp": template.fp if template else None,
        "template_name": template.name if template else None,
    }
