"""`Router.decide`: local or cloud for one request, with a short reason.

Precedence (issue 5): the client's explicit choice, air-gap, privacy and policy
pins, capacity, tier; otherwise local. Air-gap, privacy and policy are vetoes:
they keep a request local even against an explicit cloud choice (which is then
refused, not silently served elsewhere). Cloud also needs a configured provider
and budget left. Reasons are machine-readable tags (`tier:cloud(0.91)`,
`privacy:private_key`, `capacity:context`, `override:header`) and never contain
prompt text.

Every local decision, whatever made it, passes the queue bounds last (capacity.py): a local
queue over them is a 429 with Retry-After (`QueueFull`), as the cloud was no option by then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from appliance.router.capacity import fits_context, overflow_detail, queue_over, retry_after_s
from appliance.router.policy import Subject, pinned, project_of
from appliance.router.settings import PinRule, RouterSettings
from appliance.router.sticky import StickySessions, is_tool_turn, session_key
from runtimes.base import ChatRequest, Runtime
from runtimes.queue_wait import QueueWait

Route = Literal["local", "cloud"]
LOCAL_NAMES = frozenset({"local", "auto"})  # `auto` lets the router pick, served by the main model


@dataclass(frozen=True)
class Decision:
    route: Route
    reason: str
    model: str  # what serves it: the local runtime id or the cloud model name
    runtime: Runtime | None = field(default=None, compare=False)  # the local runtime, when local


class Refusal(Exception):
    """The request needs the cloud and may not (or cannot) have it; answered with a 4xx."""

    def __init__(
        self,
        status: int,
        code: str,
        reason: str,
        message: str,
        *,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.reason = reason
        self.message = message
        self.type = type  # OpenAI's error `type`
        self.headers = headers or {}  # extra response headers (Retry-After)


class QueueFull(Refusal):
    """The local queue is over a bound and the cloud is no option: 429, retry after a while."""

    def __init__(self, reason: str, retry_after_s: int):
        super().__init__(
            429, "queue_full", reason,
            f"The local model is busy (too many requests waiting: {reason}); retry in {retry_after_s} s.",
            type="rate_limit_error", headers={"Retry-After": str(retry_after_s)},
        )  # fmt: skip


@dataclass
class RouteRequest:
    """What the router may look at: the request plus the client's routing signals."""

    model: str  # as the client sent it, or the main role when the API stood in for an unknown name
    chat: ChatRequest
    route_header: str | None = None  # x-appliance-route
    project_header: str | None = None  # x-appliance-project
    api_key: str | None = None  # the bearer/x-api-key the client sent
    requested: str | None = None  # the name the client sent, for policy pins (None: `model`)
    key_name: str = ""  # the named API key it came with ("" without one), for its own budget


@dataclass(frozen=True)
class CloudSide:
    """What the router knows of the cloud: model names clients may ask for, and whether
    a client exists (never in air-gapped mode, even when providers are configured)."""

    models: frozenset[str] = frozenset()  # lowercased
    default_model: str | None = None
    enabled: bool = False

    def knows(self, name: str) -> bool:
        return name.strip().lower() in self.models


class Router:
    """Stateless per request except for sticky sessions and the local queue-time average.

    classify/latest_user_text/guard are the tier and privacy inspectors
    (`appliance.router.tier`, `appliance.router.privacy`); without them (a bare app
    with no cloud) every request is local.
    """

    def __init__(
        self,
        settings: RouterSettings,
        *,
        local_for: Callable[[str], Runtime | None],
        cloud: CloudSide,
        classify: Callable[[str], Any] | None = None,
        latest_user_text: Callable[[list[dict[str, Any]]], str] | None = None,
        guard: Any = None,
        pin_rules: Iterable[PinRule] = (),
        budget_ok: Callable[[], bool] = lambda: True,
        key_budget_ok: Callable[[str], bool] = lambda _key: True,
    ):
        self.settings = settings
        self.local_for = local_for
        self.cloud = cloud
        self.classify = classify
        self.latest_user_text = latest_user_text
        self.guard = guard
        self.pin_rules = list(pin_rules)
        self.budget_ok = budget_ok
        self.key_budget_ok = key_budget_ok
        self.sticky = StickySessions(settings.sticky_sessions)
        self.queue = QueueWait()  # local request durations, fed by the API as they finish

    # -- the decision ---------------------------------------------------------------------
    def decide(self, rr: RouteRequest) -> Decision:
        decision = self._decide(rr)
        if decision.route == "local" and decision.runtime is not None:
            self._within_queue_bounds(decision, decision.runtime)
        return decision

    def _within_queue_bounds(self, decision: Decision, runtime: Runtime) -> None:
        """Raise QueueFull when the local queue is over a bound (spilling was decided before)."""
        s = self.settings
        over = queue_over(self.queue, runtime, s.max_queue, s.queue_wait_bound_s)
        if over is None:
            return
        reason = decision.reason if "capacity:queue" in decision.reason else f"{decision.reason},{over}"
        raise QueueFull(reason, retry_after_s(self.queue, runtime))

    def _decide(self, rr: RouteRequest) -> Decision:
        explicit = self._explicit(rr)
        if explicit is not None and explicit[0] == "local":
            return self._local(rr, explicit[1])
        veto = self._veto(rr)
        if explicit is not None:
            return self._cloud_or_refuse(rr, explicit[1], veto, fallback_local=False)
        if veto is not None and veto != "air-gapped":
            return self._local_if_fits(rr, veto)  # air-gapped: capacity/tier below say if it is refused
        sticky = self._sticky(rr)
        if sticky is not None:
            return sticky
        decision = self._by_need(rr)
        self._remember(rr, decision)
        return decision

    def _explicit(self, rr: RouteRequest) -> tuple[Route, str] | None:
        header = (rr.route_header or "").strip().lower()
        if header in ("local", "cloud"):
            return header, "override:header"  # type: ignore[return-value]
        name = rr.model.strip().lower()
        if name in LOCAL_NAMES - {"auto"}:
            return "local", "override:model"
        if self.cloud.knows(name):
            return "cloud", "override:model"
        return None

    def _veto(self, rr: RouteRequest) -> str | None:
        """Why this request may never leave the machine, if it may not."""
        if self.settings.air_gapped:
            return "air-gapped"
        findings = self.guard.scan(_outbound_text(rr.chat)) if self.guard is not None else []
        if findings:
            kinds = sorted({f.kind for f in findings})
            return "privacy:" + "+".join(kinds)
        name = rr.model if rr.requested is None else rr.requested
        subject = Subject(project_of(rr.project_header, rr.chat.messages), rr.api_key, name)
        rule = pinned(self.pin_rules, subject)
        if rule is not None:
            return f"policy:{rule.label()}"
        return None

    def _sticky(self, rr: RouteRequest) -> Decision | None:
        key = session_key(rr.chat.messages) if is_tool_turn(rr.chat.messages) else None
        remembered = self.sticky.get(key) if key else None
        if remembered is None:
            return None
        route, reason = remembered
        if route == "cloud" and self._why_not_cloud(rr) is None:
            return self._cloud(f"sticky:{reason}")
        runtime = self._local_runtime(rr)
        if route == "local" and runtime is not None and fits_context(runtime, rr.chat):
            return Decision("local", f"sticky:{reason}", runtime.id, runtime)
        return None  # the session's route is no longer possible: decide afresh

    def _by_need(self, rr: RouteRequest) -> Decision:
        """Capacity first, then tier; cloud only when possible, else local and say why."""
        runtime = self._local_runtime(rr)
        if runtime is not None and not fits_context(runtime, rr.chat):
            return self._cloud_or_refuse(rr, "capacity:context", None, fallback_local=False)
        if runtime is not None:
            s = self.settings
            over = queue_over(self.queue, runtime, s.max_queue, s.queue_wait_bound_s)
            if over is not None:  # local only if the cloud may not: then the bound gives a 429
                return self._cloud_or_refuse(rr, over, None, fallback_local=True)
        if self.classify is None or self.latest_user_text is None:
            return self._local(rr, "local-only")  # no tier classifier: a bare, local-only app
        verdict = self.classify(self.latest_user_text(rr.chat.messages))
        threshold = self.settings.tier_threshold
        wants_cloud = verdict.score >= threshold if threshold is not None else verdict.tier == "cloud"
        tag = f"tier:{'cloud' if wants_cloud else 'local'}({verdict.score:.2f})"
        if not wants_cloud:
            return self._local(rr, tag)
        refuse = self.settings.air_gapped and self.settings.air_gapped_refuse_tier
        return self._cloud_or_refuse(rr, tag, None, fallback_local=not refuse)

    # -- outcomes -------------------------------------------------------------------------
    def _cloud_or_refuse(
        self, rr: RouteRequest, why: str, veto: str | None, *, fallback_local: bool
    ) -> Decision:
        """Cloud for `why`, unless vetoed or impossible: then local (if allowed and it fits) or a refusal."""
        blocked = veto or self._why_not_cloud(rr)
        if blocked is None:
            return self._cloud(why)
        reason = f"{why},{blocked}"
        if fallback_local:
            return self._local_if_fits(rr, reason)
        context = self._context_detail(rr) if why == "capacity:context" else None
        raise _refusal(reason, blocked, context=context)

    def _why_not_cloud(self, rr: RouteRequest) -> str | None:
        if self.settings.air_gapped:
            return "air-gapped"
        if not self.cloud.enabled or not self.cloud.models:
            return "no-provider"
        if not self.budget_ok():
            return "budget"
        if rr.key_name and not self.key_budget_ok(rr.key_name):
            return "key-budget"
        return None

    def _cloud(self, reason: str, model: str | None = None) -> Decision:
        name = model or self.settings.default_cloud_model or self.cloud.default_model or ""
        return Decision("cloud", reason, name)

    def _local_runtime(self, rr: RouteRequest) -> Runtime | None:
        name = rr.model.strip()
        return self.local_for("main" if name.lower() in LOCAL_NAMES or self.cloud.knows(name) else name)

    def _local(self, rr: RouteRequest, reason: str) -> Decision:
        runtime = self._local_runtime(rr)
        return Decision("local", reason, runtime.id if runtime else rr.model, runtime)

    def _local_if_fits(self, rr: RouteRequest, reason: str) -> Decision:
        runtime = self._local_runtime(rr)
        if runtime is not None and not fits_context(runtime, rr.chat):
            raise _refusal(f"{reason},capacity:context", reason, context=self._context_detail(rr))
        return self._local(rr, reason)

    def _context_detail(self, rr: RouteRequest) -> str:
        """The numbers a client needs to shorten its prompt (counted exactly when the runtime can)."""
        runtime = self._local_runtime(rr)
        if runtime is None:
            return "no local model is loaded"
        return overflow_detail(runtime, rr.chat)

    def _remember(self, rr: RouteRequest, decision: Decision) -> None:
        key = session_key(rr.chat.messages)
        if key is not None:
            self.sticky.put(key, decision.route, decision.reason.removeprefix("sticky:"))


def _outbound_text(req: ChatRequest) -> str:
    """Everything a cloud provider would receive, as one text for the privacy scan."""
    parts: list[str] = []
    for msg in req.messages:
        content = msg.get("content")
        if isinstance(content, str):
            parts.append(content)
        for call in msg.get("tool_calls") or ():
            args = (call.get("function") or {}).get("arguments")
            parts.append(args if isinstance(args, str) else str(args))
    return "\n".join(parts)


def _refusal(reason: str, blocked: str, *, context: str | None) -> Refusal:
    """`context`: set when the prompt does not fit locally (the numbers, for the message)."""
    if context is not None:
        return Refusal(
            400, "context_length_exceeded", reason,
            f"The prompt does not fit the local model's context ({context}) and may not go to the "
            f"cloud ({blocked}).",
        )
    if blocked == "budget":
        return Refusal(429, "budget_exceeded", reason, "Today's cloud budget is spent; this needs the cloud.")
    if blocked == "key-budget":
        return Refusal(429, "budget_exceeded", reason,
                       "Today's cloud budget for this API key is spent; this needs the cloud.")
    if blocked == "no-provider":
        return Refusal(400, "no_cloud_provider", reason, "This needs the cloud; no provider is configured.")
    return Refusal(403, "cloud_not_allowed", reason, f"This needs the cloud, not allowed here ({blocked}).")
