"""The routing policy: one decision per request, a pure function of body + context.

Order of checks in :meth:`RoutingPolicy.decide` (first that applies wins):

1. not a JSON object / no model / router disabled            -> ``skip``
2. API-key fingerprint or feature tag on a never-route list  -> ``skip``
3. no cheaper rung on the provider's ladder                  -> ``skip``
4. task on the never-route list                              -> ``skip``
5. request uses something the cheaper model lacks            -> ``skip``
   (or a body the extractor could not read), or a provider beta not in ``allowed_betas``
6. request asks for more output than the cheaper model gives -> ``skip``
7. score >= threshold                                        -> ``route``, else ``keep``

The score is only computed for eligible requests (``score`` is None on skip),
which keeps skipped requests cheap. ``target_quality`` is turned into a
threshold once, at construction, from the calibration table the training run
stored in the artifact (measured on its validation split): the most
aggressive threshold whose validation quality stays at or above the target,
walking from "route nothing" towards "route everything" and stopping at the
first point below target. That calibration reflects the training pair and data
(GPT-4 vs Mixtral on MMLU/GSM8K); on other traffic it is an estimate.

Config (``[router]`` table; every key optional)::

    enabled = true
    threshold = 0.62            # or: target_quality = 0.95 (not both); default target_quality 0.95
    default_model = "gpt-4o"    # used by classify for records without a model
    model_path = "…/difficulty-v1.json"
    never_route_tasks = ["code", "tool_use"]
    never_route_features = ["billing"]
    never_route_api_keys = ["<fingerprint>", …]
    [router.ladders]      openai = [["gpt-4o", "gpt-4o-mini"], …]
    [router.capabilities] "gpt-4o-mini" = ["images", "tools", …]
    [router.max_output]   "gpt-4o-mini" = 16384
    allowed_betas = ["fine-grained-tool-streaming-2025-05-14"]   # betas that do not tie a request to its model
"""

from __future__ import annotations


from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from .calibration import group_keys
from .capabilities import DEFAULT_MAX_OUTPUT, TAG_REASONS, missing_capabilities, parse_capabilities, parse_max_output
from .difficulty import DifficultyModel, load_model
from .features import extract_features
from .ladders import base_model, parse_ladders, rung_index
from .task_model import task_of
from .tasks import TASKS
from .tokens import encoding_name

DEFAULT_TARGET_QUALITY = 0.95
DEFAULT_MODEL = "gpt-4o"
# The difficulty model was trained on exam questions and word problems only;
# code and agentic tool use are out of its distribution, so by default they stay put.
DEFAULT_NEVER_ROUTE_TASKS: tuple[str, ...] = ("code", "tool_use")

CONFIG_KEYS = frozenset(
    {
        "enabled",
        "threshold",
        "target_quality",
        "default_model",
        "model_path",
        "never_route_tasks",
        "never_route_features",
        "never_route_api_keys",
        "ladders",
        "capabilities",
        "max_output",
        "allowed_betas",
        "policy",
    }
)
POLICIES = ("score", "evidence")


@dataclass(frozen=True)
class RoutingDecision:
    task: str
    score: float | None  # None when not scored
    decision: str  # "route" | "keep" | "skip"
    would_route_to: str | None  # the cheaper model, when decision == "route"
    reason: str
    candidate: str | None = None  # the cheaper model considered, routed or kept (shadow evaluations explore it)


def threshold_for_quality(calibration: Sequence[Mapping[str, float]], target: float) -> float:
    """Lowest threshold whose validation quality ratio stays >= ``target`` (see module doc)."""
    rows = sorted(calibration, key=lambda r: (-r["threshold"], r["route_fraction"]))
    if not rows:
        raise ValueError(
            "the difficulty model has no calibration table; set router.threshold instead of target_quality"
        )
    chosen = None
    for row in rows:
        if row["quality_ratio"] + 1e-12 < target:
            break
        chosen = row["threshold"]
    if chosen is None:
        return 1.0 + 1e-9  # even routing nothing is "below target": route nothing
    return float(chosen)


def target_quality(router_table: Mapping[str, Any]) -> float:
    """`[router] target_quality` (default 0.95), checked: what routing and the quality evidence aim at."""
    q = router_table.get("target_quality", DEFAULT_TARGET_QUALITY)
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < q <= 1.0:
        raise ValueError(f"router.target_quality must be a number in (0, 1], got {q!r}")
    return float(q)


def _str_list(raw: Any, key: str) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if isinstance(raw, str) or not isinstance(raw, (list, tuple)) or not all(isinstance(x, str) for x in raw):
        raise ValueError(f"router.{key} must be a list of strings, got {raw!r}")
    return frozenset(raw)


@dataclass(frozen=True)
class RoutingPolicy:
    threshold: float
    model: DifficultyModel = field(repr=False)
    ladders: Mapping[str, tuple[tuple[str, ...], ...]]
    capabilities: Mapping[str, frozenset[str]] = field(repr=False)
    max_output: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_OUTPUT), repr=False)
    allowed_betas: frozenset[str] = frozenset()
    never_route_tasks: frozenset[str] = frozenset(DEFAULT_NEVER_ROUTE_TASKS)
    never_route_features: frozenset[str] = frozenset()
    never_route_api_keys: frozenset[str] = frozenset()
    default_model: str = DEFAULT_MODEL
    enabled: bool = True
    target_quality: float | None = None  # what the threshold was resolved from, if anything
    # "evidence": per group, measured shadow verdicts decide where they are conclusive (router/quality.py)
    policy: str = "score"
    rungs: Mapping[str, Mapping[str, str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rungs", rung_index(self.ladders))

    @classmethod
    def from_config(cls, router_table: Mapping[str, Any] | None) -> "RoutingPolicy":
        cfg = dict(router_table or {})
        if router_table is not None and not isinstance(router_table, Mapping):
            raise ValueError(f"[router] must be a table, got {type(router_table).__name__}")
        unknown = sorted(set(cfg) - CONFIG_KEYS)
        if unknown:
            raise ValueError(f"unknown [router] key(s) {unknown}; allowed: {sorted(CONFIG_KEYS)}")

        enabled = cfg.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ValueError(f"router.enabled must be true or false, got {enabled!r}")

        model_path = cfg.get("model_path")
        if model_path is not None and not isinstance(model_path, str):
            raise ValueError(f"router.model_path must be a path string, got {model_path!r}")
        try:
            model = load_model(model_path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot load difficulty model {model_path or '(shipped)'}: {exc}") from exc

        has_t, has_q = "threshold" in cfg, "target_quality" in cfg
        if has_t and has_q:
            raise ValueError("set either router.threshold or router.target_quality, not both")
        target: float | None = None
        if has_t:
            t = cfg["threshold"]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
                raise ValueError(f"router.threshold must be a number in [0, 1], got {t!r}")
            threshold = float(t)
        else:
            target = target_quality(cfg)
            threshold = threshold_for_quality(model.calibration, target)

        tasks = _str_list(cfg.get("never_route_tasks", list(DEFAULT_NEVER_ROUTE_TASKS)), "never_route_tasks")
        bad_tasks = sorted(tasks - set(TASKS))
        if bad_tasks:
            raise ValueError(f"router.never_route_tasks: unknown task(s) {bad_tasks}; tasks are {list(TASKS)}")

        default_model = cfg.get("default_model", DEFAULT_MODEL)
        if not isinstance(default_model, str) or not default_model.strip():
            raise ValueError(f"router.default_model must be a model name, got {default_model!r}")

        policy = cfg.get("policy", "score")
        if policy not in POLICIES:
            raise ValueError(f"router.policy must be one of {', '.join(POLICIES)}, got {policy!r}")

        encoding_name()  # load the tokenizer now, not on the first proxied request
        return cls(
            threshold=threshold,
            model=model,
            ladders=parse_ladders(cfg.get("ladders")),
            capabilities=parse_capabilities(cfg.get("capabilities")),
            max_output=parse_max_output(cfg.get("max_output")),
            allowed_betas=_str_list(cfg.get("allowed_betas"), "allowed_betas"),
            never_route_tasks=tasks,
            never_route_features=_str_list(cfg.get("never_route_features"), "never_route_features"),
            never_route_api_keys=_str_list(cfg.get("never_route_api_keys"), "never_route_api_keys"),
            default_model=default_model,
            enabled=enabled,
            target_quality=target,
            policy=policy,
        )

    def decide(
        self,
        body: Any,
        *,
        provider: str = "openai",
        api_key_fp: str | None = None,
        feature: str | None = None,
        betas: Sequence[str] = (),
        model: str | None = None,
        template: str | None = None,
    ) -> RoutingDecision:
        """The routing decision for one request body; never raises.

        `betas`: the provider betas the request switches on (``anthropic-beta`` / ``openai-beta``
        headers). A beta is enabled per model, so one not in ``allowed_betas`` keeps the request
        on the model it was written for. `model`: the model asked for when the body does not name it
        (Gemini names it in the path). `template`: the prompt template's fingerprint, for a model
        calibrated per template (`turnout train --from-ledger`).
        """
        try:
            return self._decide(body, provider, api_key_fp, feature, betas, model, template)
        except Exception as exc:  # noqa: BLE001 - defensive: the proxy must keep proxying
            return RoutingDecision("other", None, "skip", None, f"router error: {type(exc).__name__}")

    def _decide(
        self,
        body: Any,
        provider: str,
        api_key_fp: str | None,
        feature: str | None,
        betas: Sequence[str],
        model: str | None = None,
        template: str | None = None,
    ) -> RoutingDecision:
        if not isinstance(body, dict):
            return RoutingDecision("other", None, "skip", None, "body is not a JSON object")
        f = extract_features(body)
        if model is not None and f.model is None:
            f = replace(f, model=model)
        task = task_of(f)

        def skip(reason: str) -> RoutingDecision:
            return RoutingDecision(task, None, "skip", None, reason)

        if not self.enabled:
            return skip("router disabled")
        if f.model is None:
            return skip("no model in request")
        if api_key_fp is not None and api_key_fp in self.never_route_api_keys:
            return skip("API key is never routed")
        if feature is not None and feature in self.never_route_features:
            return skip(f"feature {feature} is never routed")
        cheaper = self.rungs.get(provider, {}).get(base_model(f.model))
        if cheaper is None:
            return skip(f"no cheaper model for {f.model} ({provider})")
        if task in self.never_route_tasks:
            return skip(f"task {task} is never routed")
        missing = missing_capabilities(f.uses, cheaper, self.capabilities)
        if missing:
            return skip(f"{TAG_REASONS.get(missing[0], 'uses ' + missing[0])}; {cheaper} lacks it")
        unlisted = [b for b in betas if b not in self.allowed_betas]
        if unlisted:
            return skip(f"uses provider beta {unlisted[0]} (not in router.allowed_betas)")
        ceiling = self.max_output.get(base_model(cheaper))
        if ceiling is not None and f.max_tokens is not None and f.max_tokens > ceiling:
            return skip(f"asks for up to {f.max_tokens} output tokens; {cheaper} gives at most {ceiling}")
        score = self.model.score(f)
        calibration = self.model.pass_calibration
        if calibration is not None and self.target_quality is not None:
            # a model trained on this deployment's verdicts: hold each request's measured pass rate to the target
            keys = group_keys(task, feature, template)
            p = calibration.probability(score, keys)
            where = ", ".join(f"{k} ({n})" for k, n in calibration.evidence(keys)) or "all groups"
            why = f"pass rate {p:.2f} at score {score:.2f} [{where}]"
            if p >= self.target_quality:
                return RoutingDecision(
                    task, score, "route", cheaper, f"{why} >= {self.target_quality:.2f}", candidate=cheaper
                )
            return RoutingDecision(task, score, "keep", None, f"{why} < {self.target_quality:.2f}", candidate=cheaper)
        if score >= self.threshold:
            return RoutingDecision(
                task, score, "route", cheaper, f"score {score:.2f} >= {self.threshold:.2f}", candidate=cheaper
            )
        return RoutingDecision(
            task, score, "keep", None, f"score {score:.2f} < {self.threshold:.2f}", candidate=cheaper
        )
