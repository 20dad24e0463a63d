"""The admin's "Sync health" page: one screen to see whether sync is healthy and what to fix first.

Registered on a proxy model so it sits in the admin index under its own title; its "list" is the
page itself (providers/health.py gathers the figures). Group actions are POSTs back to it.
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from providers import health
from providers.models import SyncHealth

REFRESH_SECONDS = 30
CHART_WIDTH, CHART_HEIGHT, CHART_BARS = 720, 90, 144  # 144 bars of 10 minutes: 24 h


def writes_chart_svg(per_minute: list[int]) -> SafeString:
    """Writes per minute over 24 h as an inline SVG (rendered here: the page needs no internet)."""
    if not per_minute:
        return format_html('<p class="health-unknown">{}</p>', "Unknown: the counters (Redis) cannot be read.")
    step = max(len(per_minute) // CHART_BARS, 1)
    bars = [sum(per_minute[i : i + step]) / step for i in range(0, len(per_minute), step)]
    top = max(max(bars), 1.0)
    width = CHART_WIDTH / len(bars)
    rects = format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}"><title>{}/min</title></rect>',
        (
            tuple(
                f"{number:.1f}"
                for number in (
                    i * width,
                    CHART_HEIGHT - bar / top * CHART_HEIGHT,
                    max(width - 1, 1),
                    bar / top * CHART_HEIGHT,
                    bar,
                )
            )  # fmt: skip
            for i, bar in enumerate(bars)
        ),
    )
    return format_html(
        '<svg class="health-chart" role="img" aria-label="writes per minute, last 24 hours" '
        'viewBox="0 0 {w} {h2}" width="{w}" height="{h2}" xmlns="http://www.w3.org/2000/svg">'
        '<line x1="0" y1="{h}" x2="{w}" y2="{h}" stroke="#999"/>'
        '<g fill="#447e9b">{rects}</g>'
        '<text x="0" y="{ht}" font-size="11">24 h ago</text>'
        '<text x="{w}" y="{ht}" font-size="11" text-anchor="end">now · peak {top}/min</text></svg>',
        w=CHART_WIDTH,
        h=CHART_HEIGHT,
        h2=CHART_HEIGHT + 16,
        ht=CHART_HEIGHT + 13,
        rects=rects,
        top=f"{max(bars):.1f}",
    )


def age(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "—"
    seconds = max((now - at).total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def lag(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds == float("inf"):
        return "> 6 h"
    return f"≤ {seconds:g} s" if seconds < 60 else f"≤ {seconds / 60:g} min"


STATE_TEXT = {"ok": "OK", "auth_failed": "Auth failed (paused)", "rate_limited": "Rate limited", "paused": "Paused"}


def budget_text(budget: dict | None, now: datetime) -> str:
    """ "1,204 of 50,000 (50 % of 100,000)", and when backfills wait for it, until when."""
    if budget is None:
        return "unknown"
    used = f"{budget['used']:,}"
    if budget["limit"] is None:
        return f"{used} (daily limit not known yet)"
    text = f"{used} of {budget['allowed']['live']:,} ({budget['share']:.0%} of {budget['limit']:,})"
    if paused := budget["backfill_paused_until"]:
        text += f"; backfills wait {age(now, paused)} more"
    return text


@admin.register(SyncHealth)
class SyncHealthAdmin(admin.ModelAdmin):
    """Staff only (the admin's own permission check): the page in place of a list."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_staff

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        if request.method == "POST":
            return self._group_action(request)
        now = timezone.now()
        (crms, kinds), seconds = health.health_timed(lambda: (health.crm_health(now=now), self._kinds()))
        context = {
            **self.admin_site.each_context(request),
            "title": "Sync health",
            "opts": self.model._meta,
            "crms": [self._crm_row(crm, now) for crm in crms],
            "kinds": kinds,
            "refresh_seconds": REFRESH_SECONDS,
            "built_in": f"{seconds * 1000:.0f} ms",
            "now": now,
        }
        return TemplateResponse(request, "admin/providers/sync_health.html", context)

    @staticmethod
    def _crm_row(crm: health.CrmHealth, now: datetime) -> dict:
        return {
            "crm": crm,
            "state_text": STATE_TEXT.get(crm.state, crm.state),
            "since": f"for {age(crm.state_since, now)}" if crm.state_since else "",
            "p50": lag(crm.lag_p50),
            "p95": lag(crm.lag_p95),
            "oldest": age(crm.oldest_pending_at, now),
            "chart": writes_chart_svg(crm.writes_per_minute),
            "budget": budget_text(crm.budget, now),
            "last_event": f"{age(crm.last_event_at, now)} ago" if crm.last_event_at else "none yet",
            "cursor_age": age(crm.cursor_at, now),
        }

    @staticmethod
    def _kinds() -> list[dict]:
        kinds = []
        for kind in health.GROUP_KINDS:
            groups = [
                {
                    "group": group,
                    "url": f"{reverse(kind.admin_list)}?{urlencode(kind.filters(group.provider, group.code))}",
                }
                for group in kind.groups()
            ]
            kinds.append({"kind": kind, "groups": groups, "actions": list(kind.actions.items())})
        return kinds

    def _group_action(self, request: HttpRequest) -> HttpResponse:
        data = request.POST
        kind = health.group_kind(data.get("kind", ""))
        if kind is not None and kind.permission and not request.user.has_perm(kind.permission):
            raise PermissionDenied
        done = health.group_action_run(
            kind=data.get("kind", ""), action=data.get("action", ""), provider=data.get("provider", ""),
            code=data.get("code", ""),
        )  # fmt: skip
        if done is None:
            messages.error(request, "No such action.")
        else:
            label = health.group_kind(data["kind"]).actions[data["action"]].label
            messages.success(request, f"{label}: {done} of {data['provider']} {data['code']}.")
        return HttpResponseRedirect(request.path)
