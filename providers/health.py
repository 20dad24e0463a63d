"""What the admin's "Sync health" page shows: per CRM its state, lag, backlog and traffic, and what
needs a person, grouped by kind, CRM and code.

Every figure is cheap at any size (1,000,000 contacts, 100,000 dead letters; bench/health_page.py):
- the writes per minute and the lag histograms are counted in Redis as the forwarder works
  (syncroot.counters.sync_writes_record), one hash per CRM and hour;
- backlogs are counted up to COUNT_CAP rows through partial indexes ("10,000+" beyond), the oldest
  pending change and the last inbox event are one MIN/MAX each through an index;
- groups are GROUP BYs over the rows that need a person only (parked dead letters, links with
  issues, record issues), each through its partial index; never a COUNT(*) over a whole table.

The grouped sections are one list, GROUP_KINDS: a new kind (a conflict queue, say) is one more
GroupKind with its query and actions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.db.models import Count, Max, Min
from django.utils import timezone

from crm.registry import connected_providers, get_provider
from providers import outbox
from providers.budgets import connection_budget
from providers.crm_state import crm_states
from providers.models import (
    Conflict,
    ConflictStatus,
    Connection,
    ConnectionStatus,
    DeadLetter,
    DeadLetterStatus,
    LinkStatus,
    ProviderLink,
    RecordIssue,
    SyncCursor,
)
from syncroot.counters import LAG_BUCKETS, crm_rate_limited_at, sync_writes_read
from webhooks.models import EventStatus, WebhookEvent

COUNT_CAP = 10_000  # backlogs are counted up to here; beyond, the page says "10,000+"
RATE_LIMITED_SECONDS = 300  # a CRM that answered 429 this recently shows as rate limited
MINUTES = 24 * 60


@dataclass(frozen=True)
class Capped:
    """A count stopped at COUNT_CAP: `more` says there are more."""

    count: int
    more: bool = False

    def __str__(self) -> str:
        return f"{self.count:,}+" if self.more else f"{self.count:,}"


def capped_count(queryset) -> Capped:
    found = queryset.order_by()[: COUNT_CAP + 1].count()
    return Capped(min(found, COUNT_CAP), found > COUNT_CAP)


@dataclass(frozen=True)
class CrmHealth:
    provider: str
    label: str
    state: str  # ok | auth_failed | rate_limited
    state_detail: str
    state_since: datetime | None
    lag_p50: float | None  # seconds, upper bound of the histogram bucket; None: no write this hour
    lag_p95: float | None
    writes_last_hour: int
    writes_per_minute: list[int]  # MINUTES values, oldest first; empty when Redis cannot say
    pending: Capped
    oldest_pending_at: datetime | None
    budget: dict[str, Any] | None  # providers.budgets.connection_budget: None when Redis cannot say
    inbox_backlog: Capped
    inbox_failed: Capped
    last_event_at: datetime | None
    cursor_at: datetime | None  # when the reconciler last moved its cursor


def crm_health(*, now: datetime | None = None) -> list[CrmHealth]:
    now = now or timezone.now()
    states = {row.key: row for row in crm_states()}
    limited = crm_rate_limited_at()
    cursors = dict(SyncCursor.objects.filter(provider__in=connected_providers()).values_list("provider", "updated_at"))
    rows = []
    for name in connected_providers():
        minutes = sync_writes_read(provider=name, now=now.timestamp())
        p50, p95 = lag_percentiles(minutes[-60:], (0.5, 0.95))
        state, detail, since = _state(states.get(name), limited.get(name), now)
        inbox = WebhookEvent.objects.filter(provider=name)
        rows.append(
            CrmHealth(
                provider=name,
                label=get_provider(name).label,
                state=state,
                state_detail=detail,
                state_since=since,
                lag_p50=p50,
                lag_p95=p95,
                writes_last_hour=sum(m["w"] for m in minutes[-60:]),
                writes_per_minute=[m["w"] for m in minutes],
                pending=capped_count(_pending(name)),
                oldest_pending_at=_pending(name).aggregate(t=Min("pending_since"))["t"],
                budget=connection_budget(connection=states[name]) if name in states else None,
                inbox_backlog=capped_count(inbox.filter(status=EventStatus.RECEIVED)),
                inbox_failed=capped_count(inbox.filter(status=EventStatus.FAILED)),
                last_event_at=inbox.aggregate(t=Max("received_at"))["t"],
                cursor_at=cursors.get(name),
            )
        )
    return rows


def _pending(provider: str):
    return ProviderLink.objects.filter(provider=provider, status__in=(LinkStatus.PENDING, LinkStatus.FAILED))


def _state(state: Connection | None, limited_at: float | None, now: datetime) -> tuple[str, str, datetime | None]:
    if state is not None and state.status == ConnectionStatus.AUTH_FAILED:
        return "auth_failed", state.last_error, state.since
    if limited_at is not None and now.timestamp() - limited_at < RATE_LIMITED_SECONDS:
        return "rate_limited", "the CRM answered 429 in the last 5 minutes", datetime.fromtimestamp(limited_at, tz=UTC)
    return "ok", "", state.since if state else None


def lag_percentiles(minutes: list[Mapping[str, int]], quantiles: tuple[float, ...]) -> tuple[float | None, ...]:
    """Quantiles of the lag over these minutes, each the upper bound of its histogram bucket."""
    counts = [sum(m.get(str(bucket), 0) for m in minutes) for bucket in range(len(LAG_BUCKETS))]
    total = sum(counts)
    if not total:
        return tuple(None for _ in quantiles)
    found = []
    for quantile in quantiles:
        rank, seen = quantile * total, 0
        for bucket, count in enumerate(counts):
            seen += count
            if seen >= rank:
                found.append(LAG_BUCKETS[bucket])
                break
    return tuple(found)


# --- what needs a person, grouped -----------------------------------------------------------------
@dataclass(frozen=True)
class Group:
    provider: str
    code: str
    count: int
    sample: str


@dataclass(frozen=True)
class GroupAction:
    label: str
    run: Callable[..., int]  # (provider=, code=) → rows acted on
    confirm: str = ""


@dataclass(frozen=True)
class GroupKind:
    """One grouped section of the page. `admin_list` names the admin list the groups link to,
    filtered by `filters` (provider, code) → query parameters."""

    key: str
    title: str
    groups: Callable[[], list[Group]]
    admin_list: str
    filters: Callable[[str, str], dict[str, str]]
    actions: Mapping[str, GroupAction] = field(default_factory=dict)
    permission: str = ""  # what a user needs to run the actions


def dead_letter_groups() -> list[Group]:
    parked = DeadLetter.objects.filter(status=DeadLetterStatus.PARKED).order_by()
    rows = parked.values("provider", "error_code").annotate(n=Count("*")).order_by("-n", "provider", "error_code")
    return [
        Group(
            provider=row["provider"],
            code=row["error_code"],
            count=row["n"],
            sample=parked.filter(provider=row["provider"], error_code=row["error_code"])
            .order_by("-created_at")
            .values_list("error_message", flat=True)
            .first()
            or "",
        )
        for row in rows
    ]


def sync_issue_groups() -> list[Group]:
    """Values a CRM holds that SyncRoot refused, by CRM and code (links' `issues`, partial index)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT provider, issue->>'code', count(*), min(issue->>'message')
               FROM providers_providerlink, jsonb_array_elements(issues) AS issue
               WHERE NOT (issues = '[]'::jsonb)
               GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"""
        )
        return [Group(provider=p, code=c, count=n, sample=s or "") for p, c, n, s in cursor.fetchall()]


def record_issue_groups() -> list[Group]:
    rows = RecordIssue.objects.order_by().values("provider", "code").annotate(n=Count("*"), sample=Min("message"))
    return [Group(provider=r["provider"], code=r["code"], count=r["n"], sample=r["sample"]) for r in rows]


def conflict_groups() -> list[Group]:
    """Open cases of the conflict queue, by CRM and kind (through the status/kind index)."""
    rows = (
        Conflict.objects.filter(status=ConflictStatus.OPEN).order_by().values("provider", "kind")
        .annotate(n=Count("*"), sample=Min("message"))
    )  # fmt: skip
    return [Group(provider=r["provider"], code=r["kind"], count=r["n"], sample=r["sample"] or "") for r in rows]


GROUP_KINDS: list[GroupKind] = [
    GroupKind(
        key="dead_letters",
        title="Dead letters (parked changes)",
        groups=dead_letter_groups,
        admin_list="admin:providers_deadletter_changelist",
        filters=lambda provider, code: {"provider": provider, "error_code": code, "status__exact": "parked"},
        permission="providers.change_deadletter",
        actions={
            "retry": GroupAction(
                "Retry all",
                lambda *, provider, code: outbox.dead_letters_retry_group(provider=provider, error_code=code),
            ),  # fmt: skip
            "discard": GroupAction(
                "Discard all",
                lambda *, provider, code: outbox.dead_letters_discard_group(provider=provider, error_code=code),
                confirm="Discard every parked change of this group?",
            ),  # fmt: skip
        },
    ),
    GroupKind(
        key="sync_issues",
        title="Sync issues (values that do not fit)",
        groups=sync_issue_groups,
        admin_list="admin:providers_linkissue_changelist",
        filters=lambda provider, code: {"provider": provider, "code": code},
    ),
    GroupKind(
        key="conflicts",
        title="Conflicts (open cases for a person)",
        groups=conflict_groups,
        admin_list="admin:providers_conflict_changelist",
        filters=lambda provider, code: {"provider": provider, "kind": code, "status": "open"},
    ),
    GroupKind(
        key="record_issues",
        title="Record issues (CRM records SyncRoot cannot take in)",
        groups=record_issue_groups,
        admin_list="admin:providers_recordissue_changelist",
        filters=lambda provider, code: {"provider": provider, "code": code},
    ),
]


def group_kind(key: str) -> GroupKind | None:
    return next((kind for kind in GROUP_KINDS if kind.key == key), None)


def group_action_run(*, kind: str, action: str, provider: str, code: str) -> int | None:
    """Run a group's action; None when there is no such kind or action."""
    found = group_kind(kind)
    if found is None or action not in found.actions:
        return None
    return found.actions[action].run(provider=provider, code=code)


def health_timed(build: Callable[[], object]) -> tuple[object, float]:
    """`build()` and the seconds it took (shown at the foot of the page)."""
    started = time.perf_counter()
    return build(), time.perf_counter() - started
