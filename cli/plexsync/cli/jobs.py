"""`sync`, `jobs`, `schedule` (all through the scheduler, which decides when scans run) and `scans` (the
scanner's own history, one row per attempt).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from google.protobuf import field_mask_pb2, timestamp_pb2
from plexsync.cli.client import CliError, Handler, Services
from plexsync.cli.output import enum_label, err_console, print_fields, print_json, print_table
from plexsync.cli.parsing import (
    format_bytes,
    format_duration,
    format_time,
    format_window,
    parse_duration,
    parse_window,
)
from plexsync.cli.progress import TERMINAL, status_label, watch_jobs
from plexsync.v1 import common_pb2, scanner_pb2, scheduler_pb2

Command = Callable[[Any, str, Handler, str], argparse.ArgumentParser]

JOB_STATUSES = ["pending", "queued", "running", "succeeded", "failed", "cancelled"]


def _label(enum: Any, value: int) -> str:
    return enum_label(enum.Name(value))


def _time(message: Any, name: str) -> str:
    return format_time(getattr(message, name), message.HasField(name))


def _span(message: Any, start: str, end: str) -> str:
    """The time from one timestamp field to another, or '' when either is unset."""
    if not (message.HasField(start) and message.HasField(end)):
        return ""
    begin: timestamp_pb2.Timestamp = getattr(message, start)
    finish: timestamp_pb2.Timestamp = getattr(message, end)
    return format_duration(max((finish.ToDatetime() - begin.ToDatetime()).total_seconds(), 0.0))


# ---- sync ----------------------------------------------------------------------------------------------


def cmd_sync(args: argparse.Namespace, svc: Services) -> int:
    request = scheduler_pb2.TriggerSyncRequest(
        mode=common_pb2.SCAN_MODE_DEEP if args.deep else common_pb2.SCAN_MODE_INCREMENTAL, force=args.force
    )
    if args.library:
        request.library_id = args.library
    elif args.server:
        request.server_id = args.server
    elif args.all:
        request.all = True
    else:
        raise CliError("say what to sync: --library ID, --server ID or --all")
    # Re-enumerating a server's sections comes first, so a slow Plex needs more than the usual 30 s.
    reply = svc.call("scheduler", svc.scheduler.TriggerSync, request, timeout=180)
    jobs, created = list(reply.jobs), set(reply.created_job_ids)
    if not jobs:
        raise CliError(
            "nothing to sync: no enabled libraries (use --force to include disabled ones, or run "
            "`plexsync servers sync SERVER_ID` if the server's libraries are not registered yet)"
        )
    if not args.wait:
        if args.json:
            print_json(jobs)
        else:
            rows = [
                (j.id, j.library_name or j.library_id, _label(common_pb2.ScanMode, j.mode), status_label(j), j.reason,
                 "new" if j.id in created else f"already {status_label(j)}")
                for j in jobs
            ]  # fmt: skip
            print_table("Jobs", ["job", "library", "mode", "status", "reason", ""], rows)
            print("follow them with `plexsync sync ... --wait` or `plexsync jobs show JOB_ID`")
        return 0
    try:
        finals = watch_jobs(svc, jobs, show_progress=not args.json)
    except KeyboardInterrupt:
        err_console.print("stopped watching; the jobs keep running (`plexsync jobs cancel JOB_ID` stops one)")
        return 130
    if args.json:
        print_json(finals)
    else:
        _print_jobs(finals)
    return 0 if all(job.status == common_pb2.JOB_STATUS_SUCCEEDED for job in finals) else 1


# ---- jobs ----------------------------------------------------------------------------------------------


def _job_status(value: str) -> common_pb2.JobStatus.ValueType:
    if value.lower() not in JOB_STATUSES:
        raise CliError(f"unknown status {value!r}: {', '.join(JOB_STATUSES)}")
    return common_pb2.JobStatus.Value(f"JOB_STATUS_{value.upper()}")


def _print_jobs(jobs: list[common_pb2.Job]) -> None:
    rows = []
    for job in jobs:
        c = job.counts
        rows.append(
            (
                job.id,
                job.library_name or job.library_id,
                _label(common_pb2.JobTrigger, job.trigger),
                _label(common_pb2.ScanMode, job.mode),
                status_label(job) + (" (cancelling)" if job.cancel_requested and job.status not in TERMINAL else ""),
                _time(job, "create_time"),
                _span(job, "due_time", "start_time"),
                _span(job, "start_time", "end_time"),
                c.seen,
                c.added,
                c.updated,
                c.unchanged,
                c.failed,
                c.missing,
                job.error or job.reason,
            )
        )
    columns = ["job", "library", "trigger", "mode", "status", "created", "lag", "time", "seen", "added", "updated",
               "unchanged", "failed", "missing", "error / reason"]  # fmt: skip
    print_table("Jobs", columns, rows)


def _job_fields(job: common_pb2.Job) -> list[tuple[str, Any]]:
    c, s = job.counts, job.stats
    status = status_label(job)
    if job.cancel_requested and job.status not in TERMINAL:
        status += " (cancel requested)"
    running_for = ""
    if job.status == common_pb2.JOB_STATUS_RUNNING and job.HasField("start_time"):
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        running_for = (
            f" (running for {format_duration((now.ToDatetime() - job.start_time.ToDatetime()).total_seconds())})"
        )
    return [
        (
            "library",
            f"{job.library_name or '?'} ({job.library_id}), {_label(common_pb2.LibraryKind, job.library_kind)}",
        ),
        ("server", job.server_id),
        ("trigger", _label(common_pb2.JobTrigger, job.trigger)),
        ("triggered by", job.triggered_by or "-"),
        ("reason", job.reason or "-"),
        ("mode", _label(common_pb2.ScanMode, job.mode) + (", forced" if job.force else "")),
        ("status", status),
        ("attempts", job.attempt),
        ("replica", job.replica or "-"),
        ("scan", job.scan_id or "-"),
        ("created", _time(job, "create_time")),
        ("due", _time(job, "due_time")),
        ("dispatched", _time(job, "dispatch_time")),
        ("started", _time(job, "start_time")),
        ("ended", _time(job, "end_time") + running_for),
        ("lag (due → start)", _span(job, "due_time", "start_time") or "-"),
        ("duration", _span(job, "start_time", "end_time") or "-"),
        (
            "items",
            f"seen {c.seen}" + (f" of {c.total}" if c.total else "") + f", added {c.added}, updated "
            f"{c.updated}, unchanged {c.unchanged}, failed {c.failed}, missing {c.missing}, restored "
            f"{c.restored}",
        ),
        ("metadata fetched", c.fetched),
        ("plex requests", f"{s.plex_requests} ({format_bytes(s.plex_bytes)})"),
        ("time in listings", format_duration(s.listing_time)),
        ("time in metadata", format_duration(s.metadata_time)),
        ("time in catalog writes", format_duration(s.catalog_write_time)),
        ("error", job.error or "-"),
        ("trace id", job.trace_id or "-"),
    ]


def _show_job(args: argparse.Namespace, job: common_pb2.Job) -> int:
    if args.json:
        print_json(job)
    else:
        print_fields(f"Job {job.id}", _job_fields(job))
    return 0


def cmd_jobs_list(args: argparse.Namespace, svc: Services) -> int:
    request = scheduler_pb2.ListJobsRequest(
        library_id=args.library or "",
        server_id=args.server or "",
        status=_job_status(args.status) if args.status else common_pb2.JOB_STATUS_UNSPECIFIED,
        page_size=args.limit,
    )
    reply = svc.call("scheduler", svc.scheduler.ListJobs, request)
    if args.json:
        print_json(list(reply.jobs))
    else:
        _print_jobs(list(reply.jobs))
    return 0


def cmd_jobs_show(args: argparse.Namespace, svc: Services) -> int:
    request = scheduler_pb2.GetJobRequest(job_id=args.job_id)
    return _show_job(args, svc.call("scheduler", svc.scheduler.GetJob, request).job)


def cmd_jobs_cancel(args: argparse.Namespace, svc: Services) -> int:
    job = svc.call("scheduler", svc.scheduler.CancelJob, scheduler_pb2.CancelJobRequest(job_id=args.job_id)).job
    _show_job(args, job)
    if not args.json and job.status not in TERMINAL:
        print("cancel requested: the scan stops within a second and the job ends cancelled")
    return 0


# ---- scans (the scanner's history) ---------------------------------------------------------------------


def _print_scans(scans: list[common_pb2.Scan]) -> None:
    rows = [
        (
            scan.id,
            scan.library_id,
            _label(common_pb2.ScanMode, scan.mode),
            _label(common_pb2.ScanStatus, scan.status),
            scan.counts.seen,
            scan.counts.added,
            scan.counts.updated,
            scan.counts.unchanged,
            scan.counts.failed,
            scan.counts.missing,
            _span(scan, "start_time", "end_time"),
            scan.job_id or "-",
            scan.error,
        )
        for scan in scans
    ]
    columns = ["scan", "library", "mode", "status", "seen", "added", "updated", "unchanged", "failed", "missing",
               "time", "job", "error"]  # fmt: skip
    print_table("Scans", columns, rows)


def cmd_scans_list(args: argparse.Namespace, svc: Services) -> int:
    request = scanner_pb2.ListScansRequest(library_id=args.library or "", page_size=args.limit)
    reply = svc.call("scanner", svc.scanner.ListScans, request)
    if args.json:
        print_json(list(reply.scans))
    else:
        _print_scans(list(reply.scans))
    return 0


def cmd_scans_show(args: argparse.Namespace, svc: Services) -> int:
    scan = svc.call("scanner", svc.scanner.GetScan, scanner_pb2.GetScanRequest(scan_id=args.scan_id)).scan
    if args.json:
        print_json(scan)
        return 0
    print_fields(
        f"Scan {scan.id}",
        [
            ("library", scan.library_id),
            ("mode", _label(common_pb2.ScanMode, scan.mode) + (", forced" if scan.force else "")),
            ("status", _label(common_pb2.ScanStatus, scan.status)),
            ("job", scan.job_id or "- (started directly)"),
            ("attempt", scan.attempt),
            ("replica", scan.replica or "-"),
            ("started", _time(scan, "start_time")),
            ("ended", _time(scan, "end_time")),
            ("duration", _span(scan, "start_time", "end_time") or "-"),
            (
                "items",
                f"seen {scan.counts.seen}, added {scan.counts.added}, updated {scan.counts.updated}, "
                f"unchanged {scan.counts.unchanged}, failed {scan.counts.failed}, missing "
                f"{scan.counts.missing}",
            ),
            ("plex requests", f"{scan.stats.plex_requests} ({format_bytes(scan.stats.plex_bytes)})"),
            ("error", scan.error or "-"),
            ("trace id", scan.trace_id or "-"),
        ],
    )
    return 0


# ---- schedule ------------------------------------------------------------------------------------------


def _own_or_default(own: str, effective: str) -> str:
    return f"{own}" if own else f"{effective} (default)"


def _interval(schedule: scheduler_pb2.Schedule) -> str:
    own = format_duration(schedule.refresh_interval) if schedule.refresh_interval.seconds else ""
    return _own_or_default(own, format_duration(schedule.effective_refresh_interval))


def _deep_every(schedule: scheduler_pb2.Schedule) -> str:
    effective = f"every {schedule.effective_deep_every}th scan" if schedule.effective_deep_every else "never by count"
    return _own_or_default(effective if schedule.deep_every else "", effective)


def _deep_interval(schedule: scheduler_pb2.Schedule) -> str:
    seconds = schedule.effective_deep_interval.seconds
    effective = f"after {format_duration(schedule.effective_deep_interval)}" if seconds else "never by age"
    return _own_or_default(effective if schedule.deep_interval.seconds else "", effective)


def _next_run(schedule: scheduler_pb2.Schedule) -> str:
    if not schedule.HasField("next_run_time"):
        return "- (sync is off)" if not schedule.enabled else "-"
    return format_time(schedule.next_run_time)


def _print_schedules(schedules: list[scheduler_pb2.Schedule]) -> None:
    rows = [
        (
            s.library_id,
            s.library_name,
            "on" if s.enabled else "off",
            _interval(s),
            _deep_every(s),
            _deep_interval(s),
            format_window(s.window),
            _time(s, "last_success_time"),
            _next_run(s),
            _label(common_pb2.ScanMode, s.next_mode),
            s.next_reason,
        )
        for s in schedules
    ]
    columns = ["library", "name", "sync", "interval", "deep every", "deep after", "window", "last success",
               "next run", "next mode", "why"]  # fmt: skip
    print_table("Schedules", columns, rows)


def _show_schedule(args: argparse.Namespace, s: scheduler_pb2.Schedule) -> int:
    if args.json:
        print_json(s)
        return 0
    print_fields(
        f"Schedule of {s.library_name or s.library_id}",
        [
            ("library", f"{s.library_name} ({s.library_id})"),
            ("server", s.server_id),
            ("sync", "on" if s.enabled else "off (no scheduled scans; `plexsync schedule set LIB --enable`)"),
            ("interval", _interval(s)),
            ("deep scan every", _deep_every(s)),
            ("deep scan after", _deep_interval(s)),
            ("window", format_window(s.window)),
            ("last run", _time(s, "last_run_time")),
            ("last success", _time(s, "last_success_time")),
            ("last deep scan", _time(s, "last_deep_time")),
            ("next run", _next_run(s)),
            ("next mode", _label(common_pb2.ScanMode, s.next_mode)),
            ("why", s.next_reason or "-"),
        ],
    )
    return 0


def cmd_schedule_list(args: argparse.Namespace, svc: Services) -> int:
    schedules: list[scheduler_pb2.Schedule] = []
    token = ""
    while True:
        request = scheduler_pb2.ListSchedulesRequest(server_id=args.server or "", page_size=1000, page_token=token)
        reply = svc.call("scheduler", svc.scheduler.ListSchedules, request)
        schedules.extend(reply.schedules)
        token = reply.next_page_token
        if not token:
            break
    if args.json:
        print_json(schedules)
    else:
        _print_schedules(schedules)
    return 0


def cmd_schedule_show(args: argparse.Namespace, svc: Services) -> int:
    request = scheduler_pb2.GetScheduleRequest(library_id=args.library_id)
    return _show_schedule(args, svc.call("scheduler", svc.scheduler.GetSchedule, request).schedule)


def schedule_change(args: argparse.Namespace) -> tuple[scheduler_pb2.Schedule, list[str]]:
    """The Schedule and update-mask paths for exactly the flags given."""
    schedule = scheduler_pb2.Schedule(library_id=args.library_id)
    paths: list[str] = []
    if args.enabled is not None:
        schedule.enabled = args.enabled
        paths.append("enabled")
    if args.interval is not None:
        schedule.refresh_interval.CopyFrom(parse_duration(args.interval, allow_default=True))
        paths.append("refresh_interval")
    if args.deep_every is not None:
        if args.deep_every < 0:
            raise CliError(f"invalid --deep-every {args.deep_every}: a count of scans, 0 for the default")
        schedule.deep_every = args.deep_every
        paths.append("deep_every")
    if args.deep_interval is not None:
        schedule.deep_interval.CopyFrom(parse_duration(args.deep_interval, allow_default=True))
        paths.append("deep_interval")
    if args.tz is not None and args.window is None:
        raise CliError("--tz goes with --window START-END")
    if args.window is not None:
        schedule.window.CopyFrom(parse_window(args.window, args.tz or ""))
        paths.append("window")
    elif args.no_window:
        paths.append("window")
    if not paths:
        raise CliError("nothing to change: give --interval, --deep-every, --deep-interval, --window/--no-window, "
                       "or --enable/--disable")  # fmt: skip
    return schedule, paths


def cmd_schedule_set(args: argparse.Namespace, svc: Services) -> int:
    schedule, paths = schedule_change(args)
    request = scheduler_pb2.UpdateScheduleRequest(schedule=schedule, update_mask=field_mask_pb2.FieldMask(paths=paths))
    return _show_schedule(args, svc.call("scheduler", svc.scheduler.UpdateSchedule, request).schedule)


def cmd_schedule_status(args: argparse.Namespace, svc: Services) -> int:
    reply = svc.call("scheduler", svc.scheduler.GetSchedulerStatus, scheduler_pb2.GetSchedulerStatusRequest())
    if args.json:
        print_json(reply)
        return 0
    print_fields(
        "Scheduler",
        [
            (
                "leader",
                (reply.leader or "none (no replica leads: scheduled scans wait)")
                + (" (this replica answered)" if reply.is_leader else ""),
            ),
            ("answered by", reply.replica),
            ("leader since", _time(reply, "leader_since")),
            ("last tick", _time(reply, "last_tick_time")),
            ("tick every", format_duration(reply.tick_interval)),
            ("default interval", format_duration(reply.default_refresh_interval)),
            ("servers re-enumerated every", format_duration(reply.server_sync_interval)),
            ("limits", f"{reply.max_running} scans at once, {reply.max_running_per_server} per Plex server"),
            ("queue", f"{reply.pending} pending, {reply.queued} queued, {reply.running} running"),
        ],
    )
    return 0


# ---- argument parsing ----------------------------------------------------------------------------------


def register(sub: Any, command: Command) -> None:
    """Add sync, jobs, scans and schedule to the `plexsync` parser."""
    sync = command(sub, "sync", cmd_sync, "scan libraries now (through the scheduler)")
    target = sync.add_mutually_exclusive_group()
    target.add_argument("--library", help="one library")
    target.add_argument("--server", help="every library of a server (its sections are re-enumerated first)")
    target.add_argument("--all", action="store_true", help="every library of every server")
    sync.add_argument("--deep", action="store_true", help="refetch everything, not only changes")
    sync.add_argument("--force", action="store_true",
                      help="include libraries whose sync is off; queue a follow-up behind a running job")  # fmt: skip
    sync.add_argument("--wait", action="store_true", help="follow progress until the jobs end")

    jobs = sub.add_parser("jobs", help="scan jobs: running, queued and past").add_subparsers(
        dest="action", required=True
    )
    jobs_list = command(jobs, "list", cmd_jobs_list, "list jobs, newest first")
    jobs_list.add_argument("--library")
    jobs_list.add_argument("--server")
    jobs_list.add_argument("--status", help=", ".join(JOB_STATUSES))
    jobs_list.add_argument("--limit", type=int, default=20)
    command(jobs, "show", cmd_jobs_show, "everything about one job").add_argument("job_id")
    command(jobs, "cancel", cmd_jobs_cancel, "cancel a job (queued: never starts; running: stops)").add_argument(
        "job_id"
    )

    scans = sub.add_parser("scans", help="the scanner's scans (one per job attempt)").add_subparsers(
        dest="action", required=True
    )
    scans_list = command(scans, "list", cmd_scans_list, "list scans, newest first")
    scans_list.add_argument("--library")
    scans_list.add_argument("--limit", type=int, default=20)
    command(scans, "show", cmd_scans_show, "show a scan").add_argument("scan_id")

    schedule = sub.add_parser("schedule", help="when libraries are scanned").add_subparsers(
        dest="action", required=True
    )
    command(schedule, "list", cmd_schedule_list, "every library's schedule and next run").add_argument("--server")
    command(schedule, "show", cmd_schedule_show, "one library's schedule").add_argument("library_id")
    command(schedule, "status", cmd_schedule_status, "the scheduler: leader, limits, queue")
    change = command(schedule, "set", cmd_schedule_set, "change a library's schedule (only the flags given)")
    change.add_argument("library_id")
    change.add_argument("--interval", help="time between scheduled scans, e.g. 30m, 6h, 1d; 'default'")
    change.add_argument("--deep-every", type=int, help="every Nth scheduled scan is deep; 0 for the default")
    change.add_argument("--deep-interval", help="deep when the last deep scan is older, e.g. 7d; 'default'")
    window = change.add_mutually_exclusive_group()
    window.add_argument("--window", help="scheduled scans start only START-END, e.g. 01:00-06:00")
    window.add_argument("--no-window", action="store_true", help="scheduled scans start any time")
    change.add_argument("--tz", help="the window's IANA time zone, e.g. Europe/Berlin (default UTC)")
    enabled = change.add_mutually_exclusive_group()
    enabled.add_argument("--enable", dest="enabled", action="store_const", const=True, help="scheduled scans on")
    enabled.add_argument("--disable", dest="enabled", action="store_const", const=False, help="scheduled scans off")
