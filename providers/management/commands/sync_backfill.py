import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from tqdm import tqdm

from crm.registry import PROVIDER_CLASSES, connected_providers
from providers.backfill import COLUMNS, SYNCROOT, BackfillReport, backfill_from_syncroot
from providers.backfill_import import backfill_from_crm

WORKER_HINT = "celery -A syncroot worker -Q forwarder,dlq"


class _Raw:
    """tqdm redraws its line with carriage returns: write to stderr without Django's newline."""

    def __init__(self, out: OutputWrapper) -> None:
        self._out = out

    def write(self, text: str) -> None:
        self._out.write(text, ending="")

    def flush(self) -> None:
        self._out.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)


class _Bar:
    def __init__(self, out: OutputWrapper, *, enabled: bool) -> None:
        self.out, self.enabled, self.bar = out, enabled, None

    def start(self, *, label: str, total: int | None) -> None:
        if self.enabled:
            self.bar = tqdm(total=total, desc=label, unit="rec", file=_Raw(self.out), dynamic_ncols=False)

    def advance(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Command(BaseCommand):
    help = (
        "Import every contact of a CRM into SyncRoot (matching by email), or push every SyncRoot contact "
        "to the CRMs. Resumable: an interrupted run continues from its checkpoint."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        crms = sorted(PROVIDER_CLASSES)
        parser.add_argument(
            "--from", dest="source", required=True, choices=[*crms, SYNCROOT],
            help="A CRM to import from, or 'syncroot' to push SyncRoot's contacts out.",
        )  # fmt: skip
        parser.add_argument(
            "--to", dest="targets", action="append", choices=crms,
            help="With --from syncroot: only this CRM (repeatable; default every connected CRM).",
        )  # fmt: skip
        parser.add_argument("--dry-run", action="store_true", help="Count what would happen; write nothing.")
        parser.add_argument(
            "--restart", action="store_true", help="Ignore the checkpoint and start from the beginning."
        )
        parser.add_argument("--limit", type=_positive, help="Stop after N records (the checkpoint is kept).")
        parser.add_argument(
            "--push-now", action="store_true",
            help="Send to the CRMs from this process instead of leaving it to the forwarder workers.",
        )  # fmt: skip
        parser.add_argument(
            "--relink", action="store_true",
            help="With --from syncroot: the CRM was emptied or replaced (another portal or org, a restarted "
            "sandbox); forget the record ids held for it and send every contact again, matched by email.",
        )  # fmt: skip
        parser.add_argument("--chunk-size", type=_positive, help="Records per checkpoint (default 1,000 / 500).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar on stderr.")
        parser.add_argument("--json", action="store_true", help="Print the counts as JSON instead of a table.")

    def handle(self, *args, source: str, targets: list[str] | None, **options: Any) -> None:
        connected = connected_providers()
        for name in [source, *(targets or [])]:
            if name != SYNCROOT and name not in connected:
                raise CommandError(f"{name} is not connected: set its credentials ({name.upper()}_*) first.")
        if targets and source != SYNCROOT:
            raise CommandError("--to only applies to --from syncroot (an import forwards to every other CRM).")
        if options["relink"] and source != SYNCROOT:
            raise CommandError("--relink only applies to --from syncroot.")
        common = {
            "dry_run": options["dry_run"], "restart": options["restart"], "limit": options["limit"],
            "push_now": options["push_now"], "progress": _Bar(self.stderr, enabled=not options["no_progress"]),
        }  # fmt: skip
        if options["chunk_size"]:
            common["chunk_size"] = options["chunk_size"]
        if source == SYNCROOT:
            report = backfill_from_syncroot(
                targets=sorted(set(targets)) if targets else None, relink=options["relink"], **common
            )
        else:
            report = backfill_from_crm(provider_name=source, **common)
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            self.stdout.write(render(report))
        if report.stop_reason == "interrupted":
            raise CommandError("Interrupted; run the same command again to resume.", returncode=130)
        if report.stop_reason == "error":
            raise CommandError(f"{report.stopped}. Run the same command again to resume from the checkpoint.")


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def table(header: list[str], rows: list[list[Any]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: list[Any]) -> str:
        cells = [str(row[0]).ljust(widths[0])] + [str(v).rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def render(report: BackfillReport) -> str:
    direction = f"{report.source} → {', '.join(report.targets)}"
    lines = [f"Backfill {direction}" + (" (dry run: nothing was written)" if report.dry_run else "")]
    if report.resumed_from:
        lines.append(f"Resumed from checkpoint {report.resumed_from}.")
    columns = list(COLUMNS)
    if any(tally.queued for tally in report.rows.values()):
        columns.append("to push" if report.dry_run else "queued")
    rows = []
    for target, tally in report.rows.items():
        counts = [getattr(tally, c) for c in COLUMNS] + ([tally.queued] if len(columns) > len(COLUMNS) else [])
        rows.append([target, *counts])
    lines += ["", table(["target", *columns], rows)]
    if report.forwarded:
        forwarded = [[name, t["synced"], t["failed"], t["parked"]] for name, t in report.forwarded.items()]
        lines += ["", "Pushed to the CRMs in this process:", table(["crm", "synced", "failed", "parked"], forwarded)]
    failed = sum(tally.failed for tally in report.rows.values())
    if report.errors:
        lines += ["", f"Failed records ({failed}):"]
        lines += [f"  {e.record} → {e.target}: {e.message}" for e in report.errors]
        if failed > len(report.errors):
            lines.append(f"  … and {failed - len(report.errors)} more (see the logs)")
    lines.append("")
    if report.finished:
        lines.append(f"Finished in {report.elapsed:.1f} s.")
    else:
        lines.append(f"Not finished ({report.stopped}) after {report.elapsed:.1f} s; the checkpoint is kept.")
    if report.waiting_for_workers:
        lines.append(
            f"Contacts are queued for {', '.join(report.waiting_for_workers)}: they are sent once the forwarder "
            f"workers run ({WORKER_HINT}); or run again with --push-now to send them from here."
        )
    return "\n".join(lines)
