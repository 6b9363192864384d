"""The chaos checker's self-test: doctored copies of the journal and the database must fail."""

from __future__ import annotations

import asyncpg
from chaos_check import (
    DB_DOCTORS,
    DROP_BEFORE,
    Journal,
    check,
    column_of,
    doctor_journal_fresh_twice,
    doctor_journal_refused,
)
from chaos_stack import Clock, Stack, asyncpg_url
from chaos_tenant import Tenant


async def self_test_checker(
    stack: Stack, tenant: Tenant, journal: Journal, clock: Clock
) -> list[tuple[str, bool, str]]:
    """Break copies of the journal and the database on purpose; each must be caught."""
    from rating_service.store.database import with_database

    results: list[tuple[str, bool, str]] = []
    source = asyncpg_url(stack.database_url)
    charged = [s for s in journal.events.values() if s.state == "charged"]
    if not charged:
        return [("there is a charged event to doctor", False, "none was charged")]
    for label, (doctored, event_id) in {
        "journal: a charged event acknowledged as fresh twice": doctor_journal_fresh_twice(journal),
        "journal: a charged event whose caller was told it was refused": doctor_journal_refused(
            journal
        ),
    }.items():
        report = await check(source, tenant.tenant_id, doctored, reconcile=False)
        column = "duplicated"
        caught = column_of(report, column) > 0
        results.append((label, caught, f"{column} {column_of(report, column)} ({event_id})"))
    admin = await asyncpg.connect(asyncpg_url(with_database(stack.database_url, "postgres")))
    try:
        for n, (label, (sql, column)) in enumerate(DB_DOCTORS.items()):
            name = f"chaos_doctored_{n}"
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "rating"')
            url = asyncpg_url(with_database(stack.database_url, name))
            conn = await asyncpg.connect(url)
            try:
                if label in DROP_BEFORE:
                    await conn.execute(DROP_BEFORE[label])
                status = await conn.execute(sql, tenant.tenant_id)
            except asyncpg.PostgresError as error:
                results.append((f"database: {label}", False, f"could not doctor: {error}"))
                continue
            finally:
                await conn.close()
            # Reconciling is slow and only sees account totals: run it where that is the defect.
            report = await check(url, tenant.tenant_id, journal, reconcile="account" in label)
            caught = column_of(report, column) > 0
            results.append(
                (f"database: {label}", caught, f"{status}; {column} {column_of(report, column)}")
            )
            await admin.execute(f'DROP DATABASE "{name}"')
    finally:
        await admin.close()
    clock.say(
        f"checker self-test: {sum(1 for _, ok, _ in results if ok)}/{len(results)} doctored"
        " defects caught"
    )
    return results
