"""Reads of runs and chat sessions for the transports and the REST API: the agent a request names,
a run or session of the organization, a run's events, and the `?wait` poll for a run's end."""

from __future__ import annotations

import copy
import functools
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import QuerySet

from agents.models import Bundle, BundleVersion, VersionStatus
from agents.selectors import bundle_get
from execution.models import (
    ChatSession,
    Run,
    RunEvent,
    RunStatus,
)
from lightfast_cloud import sql
from lightfast_cloud.api_input import unstorable
from lightfast_cloud.errors import LightfastError
from organizations.models import Organization


def run_events_after(run: Run | uuid.UUID | str, seq: int, *, limit: int | None = None) -> list[RunEvent]:
    """The run's events with seq greater than `seq`, in order (at most `limit`).

    Plain SQL built once per database vendor: the REST API's event pages read it on every poll.
    """
    run_id = run.pk if isinstance(run, Run) else uuid.UUID(str(run))
    query, names = _run_events_sql(sql.vendor(), limit is not None)
    params = [sql.prep_value(RunEvent, "run", run_id), seq, *([limit] if limit is not None else [])]
    return [sql.instance(RunEvent, names, row) for row in sql.fetch_all(query, params)]


@functools.cache
def _run_events_sql(vendor: str, limited: bool) -> tuple[str, tuple[str, ...]]:
    names = tuple(field.name for field in RunEvent._meta.concrete_fields)
    columns = ", ".join(sql.column_for(vendor, RunEvent, name) for name in names)
    seq = sql.column_for(vendor, RunEvent, "seq")
    # Quoted identifiers only; the values are parameters.
    query = (
        f"SELECT {columns} FROM {sql.table_for(vendor, RunEvent)}"  # noqa: S608
        f" WHERE {sql.column_for(vendor, RunEvent, 'run')} = %s AND {seq} > %s ORDER BY {seq}"
    )
    return (f"{query} LIMIT %s" if limited else query), names


@dataclass(frozen=True)
class AgentTarget:
    """An agent of the organization's active bundle version, addressed as `bundle/agentKey`."""

    version: BundleVersion
    agent_key: str

    @property
    def agent_id(self) -> str:
        """`bundle/agentKey`."""
        return f"{self.version.bundle.slug}/{self.agent_key}"


def agent_target_resolve(*, organization: Organization, bundle: str, agent: str) -> AgentTarget:
    """The organization's runnable agent; another organization's (or no) bundle is `not_found`."""
    # A websocket path reaches here without the HTTP middleware: a name with NUL names nothing.
    if unstorable(bundle) or unstorable(agent):
        raise LightfastError(code="not_found", message=f"No bundle {bundle!r} in your organization.")
    version = _active_version(organization, bundle)
    if version is None:
        _refuse_not_runnable(organization=organization, bundle=bundle)
        # It became runnable between the two reads (activated meanwhile): one more read.
        version = _active_version(organization, bundle)
        if version is None:
            raise LightfastError(code="not_found", message=f"No bundle {bundle!r} in your organization.")
    if version.agent(agent) is None:
        raise LightfastError(
            code="not_found",
            message=f"Bundle {bundle!r} has no agent {agent!r}.",
            detail={"agents": sorted(version.agents())},
        )
    return AgentTarget(version=version, agent_key=agent)


def _refuse_not_runnable(*, organization: Organization, bundle: str) -> None:
    """Raise why the bundle has no runnable active version (the slow path, with the reason)."""
    found = bundle_get(organization=organization, slug=bundle)
    if found is None:
        raise LightfastError(code="not_found", message=f"No bundle {bundle!r} in your organization.")
    version = found.active_version
    if version is None:
        latest = found.versions.order_by("-number").first()
        why = f" (version {latest.number} is {latest.status})" if latest is not None else ""
        raise LightfastError(
            code="invalid_bundle",
            message=f"Bundle {bundle!r} has no active version to run{why}; activate a ready version.",
            detail={"status": latest.status if latest is not None else None},
        )
    if version.status != VersionStatus.READY:
        raise LightfastError(
            code="invalid_bundle",
            message=f"The active version of {bundle!r} is {version.status} and cannot run.",
            detail={"status": version.status},
        )


# Every run and chat turn names its agent as `bundle/agent`: the bundle's live row and active
# version are read with one plain statement, and the version itself (its manifest, which a real
# bundle makes tens of kilobytes of JSON) comes from a per-process cache keyed by its id, hash and
# creation time. Only the fields that can change on a version (status, quarantine, files) are taken
# from the fresh read.
_VERSION_CACHE_SIZE = 256
_versions: OrderedDict[tuple[Any, ...], BundleVersion] = OrderedDict()
_versions_lock = threading.Lock()
_FRESH_VERSION_FIELDS = ("status", "script_file", "quarantined_at", "files_deleted_at")
# With the id, what tells a version apart from another that got the same id (SQLite hands out the
# id of a rolled-back insert again).
_VERSION_IDENTITY_FIELDS = ("sha256", "created_at")
# Where the bundle's columns start in `_active_version_sql`'s row.
_BUNDLE_COLUMNS_AT = 1 + len(_FRESH_VERSION_FIELDS) + len(_VERSION_IDENTITY_FIELDS)


def _active_version(organization: Organization, slug: str) -> BundleVersion | None:
    """The live bundle's active version when it is ready, with `.bundle` set; None otherwise."""
    query, bundle_names = _active_version_sql(sql.vendor())
    row = sql.fetch_one(query, [sql.prep_value(Bundle, "organization", organization.pk), slug])
    if row is None or row[0] is None:
        return None
    fresh = sql.convert(BundleVersion, _FRESH_VERSION_FIELDS, row[1 : 1 + len(_FRESH_VERSION_FIELDS)])
    if fresh[0] != VersionStatus.READY:
        return None
    version_id = int(row[0])
    identity = (version_id, *row[1 + len(_FRESH_VERSION_FIELDS) : _BUNDLE_COLUMNS_AT])
    with _versions_lock:
        cached = _versions.get(identity)
        if cached is not None:
            _versions.move_to_end(identity)
    if cached is None:
        loaded = BundleVersion.objects.filter(pk=version_id, organization=organization).first()
        if loaded is None:
            return None
        with _versions_lock:
            _versions[identity] = cached = loaded
            while len(_versions) > _VERSION_CACHE_SIZE:
                _versions.popitem(last=False)
    # A copy per caller (Django copies its state and related-object cache too): the cached instance
    # is shared by threads; its manifest is only read.
    version = copy.copy(cached)
    for name, value in zip(_FRESH_VERSION_FIELDS, fresh, strict=True):
        setattr(version, name, value)
    version.organization = organization
    version.bundle = sql.instance(Bundle, bundle_names, row[_BUNDLE_COLUMNS_AT:])
    return version


@functools.cache
def _active_version_sql(vendor: str) -> tuple[str, tuple[str, ...]]:
    bundle_names = tuple(field.name for field in Bundle._meta.concrete_fields)
    col = functools.partial(sql.column_for, vendor)

    selected = ", ".join(
        [f"v.{col(BundleVersion, 'id')}"]
        + [f"v.{col(BundleVersion, name)}" for name in _FRESH_VERSION_FIELDS + _VERSION_IDENTITY_FIELDS]
        + [f"b.{col(Bundle, name)}" for name in bundle_names]
    )
    # Quoted identifiers only; the values are parameters. The live slug is unique.
    query = (
        f"SELECT {selected} FROM {sql.table_for(vendor, Bundle)} b"  # noqa: S608
        f" LEFT JOIN {sql.table_for(vendor, BundleVersion)} v"
        f" ON v.{col(BundleVersion, 'id')} = b.{col(Bundle, 'active_version')}"
        f" WHERE b.{col(Bundle, 'organization')} = %s AND b.{col(Bundle, 'slug')} = %s"
        f" AND b.{col(Bundle, 'deleted_at')} IS NULL"
    )
    return query, bundle_names


def agent_target_parse(*, organization: Organization, agent_id: str) -> AgentTarget:
    """`bundle/agentKey` → the organization's agent."""
    bundle, slash, agent = agent_id.partition("/")
    if not slash or not bundle or not agent:
        raise LightfastError(code="invalid_input", message="`agent` must be `bundle/agentKey`.")
    return agent_target_resolve(organization=organization, bundle=bundle, agent=agent)


def run_queryset(*, organization: Organization) -> QuerySet[Run]:
    """The organization's runs with what the API shows of them."""
    return Run.objects.filter(organization=organization).select_related("bundle_version__bundle", "session")


def run_queryset_filter(
    runs: QuerySet[Run],
    *,
    status: str | None = None,
    agent: str | None = None,
    session: str | None = None,
    since: date | None = None,
    until: date | None = None,
) -> QuerySet[Run]:
    """Runs (already scoped) with this status, of this agent (`bundle/agentKey`), of this chat session,
    created on or after the UTC day `since` and on or before the UTC day `until`."""
    if status:
        runs = runs.filter(status=status)
    if agent:
        bundle, _, agent_key = agent.partition("/")
        runs = runs.filter(bundle_version__bundle__slug=bundle, agent_key=agent_key)
    if session:
        runs = runs.filter(session__public_id=session)
    if since is not None:
        runs = runs.filter(created_at__gte=datetime(since.year, since.month, since.day, tzinfo=UTC))
    if until is not None:
        end = until + timedelta(days=1)
        runs = runs.filter(created_at__lt=datetime(end.year, end.month, end.day, tzinfo=UTC))
    return runs


def run_get(*, organization: Organization, run_id: str | uuid.UUID) -> Run:
    """The organization's run; anything else (malformed id, another organization's run) is `not_found`.

    One plain statement (every run read, cancel and resume makes it; the ORM compiled its
    select_related query, some 80 columns, each time): the run whole, with `organization`,
    `bundle_version` (its `number` and `bundle`, the bundle's `slug`) and `session` (its
    `public_id`) set. The related objects' other fields are deferred: reading one queries for it.
    """
    try:
        key = uuid.UUID(str(run_id))
    except ValueError as exc:
        raise LightfastError(code="not_found", message="No such run.") from exc
    query, names = _run_get_sql(sql.vendor())
    row = sql.fetch_one(
        query, [sql.prep_value(Run, "id", key), sql.prep_value(Run, "organization", organization.pk)]
    )
    if row is None:
        raise LightfastError(code="not_found", message="No such run.")
    count = len(names)
    run = sql.instance(Run, names, row[:count])
    version_number, bundle_id, bundle_slug, session_public_id = row[count:]
    bundle = sql.instance(Bundle, ("id", "slug"), (bundle_id, bundle_slug))
    version = sql.instance(
        BundleVersion, ("id", "number", "bundle"), (run.bundle_version_id, version_number, bundle_id)
    )
    version.bundle = bundle
    run.organization = organization
    run.bundle_version = version
    if run.session_id is not None:
        run.session = sql.instance(ChatSession, ("id", "public_id"), (run.session_id, session_public_id))
    return run


@functools.cache
def _run_get_sql(vendor: str) -> tuple[str, tuple[str, ...]]:
    names = tuple(field.name for field in Run._meta.concrete_fields)
    col = functools.partial(sql.column_for, vendor)

    run_columns = ", ".join(f"r.{col(Run, name)}" for name in names)
    run, version, bundle, session = (
        sql.table_for(vendor, model) for model in (Run, BundleVersion, Bundle, ChatSession)
    )
    # Quoted identifiers only; the values are parameters.
    query = (
        f"SELECT {run_columns}, v.{col(BundleVersion, 'number')}, b.{col(Bundle, 'id')},"  # noqa: S608
        f" b.{col(Bundle, 'slug')}, s.{col(ChatSession, 'public_id')} FROM {run} r"
        f" JOIN {version} v ON v.{col(BundleVersion, 'id')} = r.{col(Run, 'bundle_version')}"
        f" JOIN {bundle} b ON b.{col(Bundle, 'id')} = v.{col(BundleVersion, 'bundle')}"
        f" LEFT JOIN {session} s ON s.{col(ChatSession, 'id')} = r.{col(Run, 'session')}"
        f" WHERE r.{col(Run, 'id')} = %s AND r.{col(Run, 'organization')} = %s"
    )
    return query, names


def session_get(*, organization: Organization, public_id: str) -> ChatSession | None:
    """The organization's session with this public id, or None (every chat turn reads it: plain SQL)."""
    query, names = _session_get_sql(sql.vendor())
    row = sql.fetch_one(query, [sql.prep_value(ChatSession, "organization", organization.pk), public_id])
    return None if row is None else sql.instance(ChatSession, names, row)


@functools.cache
def _session_get_sql(vendor: str) -> tuple[str, tuple[str, ...]]:
    names = tuple(field.name for field in ChatSession._meta.concrete_fields)
    columns = ", ".join(sql.column_for(vendor, ChatSession, name) for name in names)
    where = " AND ".join(
        f"{sql.column_for(vendor, ChatSession, name)} = %s" for name in ("organization", "public_id")
    )
    # Quoted identifiers only; the values are parameters.
    return f"SELECT {columns} FROM {sql.table_for(vendor, ChatSession)} WHERE {where}", names  # noqa: S608


# `?wait`: how often the status of a run being waited for is read.
WAIT_POLL_S = 0.05


def run_wait(*, organization: Organization, run_id: uuid.UUID, timeout_s: float) -> Run:
    """The organization's run, read again once it ended or `timeout_s` passed (whichever comes first)."""
    deadline = time.monotonic() + timeout_s
    while timeout_s and time.monotonic() < deadline:
        current = Run.objects.filter(pk=run_id).values_list("status", flat=True).get()
        if current not in (RunStatus.QUEUED, RunStatus.RUNNING):
            break
        time.sleep(WAIT_POLL_S)
    return run_get(organization=organization, run_id=run_id)
