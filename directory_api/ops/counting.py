"""Counts that stay cheap at any size: exact while counting reads little, PostgreSQL's estimate beyond.

An exact count(*) reads every row it counts, so at a million enrolments the
overview's figures took about a second. On PostgreSQL each count first asks
the planner what it would cost (EXPLAIN, well under a millisecond): within
MAX_EXACT_COST it is counted, else the planner's own row estimate is the
figure (from the table's statistics, kept by autovacuum's ANALYZE), marked
`About` and shown as "about N". SQLite always counts: it is for small
installations.
"""

import math

import peewee

from directory_api import models
from directory_api.db import is_postgres

# In the planner's cost units (a page read sequentially is 1): about 10 ms of counting on a modest machine,
# e.g. an index-only count of some 30,000 rows; a count of a million-row table costs about 20,000.
MAX_EXACT_COST = 1000.0


class About(int):
    """An estimated figure: an integer wherever figures are (status --json), "about N" where shown."""


def rounded(value: float) -> int:
    """An estimate to two significant figures (967 -> 970, 1,000,213 -> 1,000,000): no false precision."""
    if value < 1.5:
        return 0  # the planner never estimates below one row, and would say so of none
    if value < 100:
        return round(value)
    scale = 10 ** (int(math.log10(value)) - 1)
    return int(round(value / scale) * scale)


def plan(query: peewee.SelectBase) -> tuple[float, float]:
    """PostgreSQL's (total cost, rows) for `query`, from EXPLAIN: nothing is run."""
    sql, params = query.sql()
    [[explained]] = models.database.execute_sql(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchall()
    top = explained[0]["Plan"]
    return top["Total Cost"], top["Plan Rows"]


def cheap(query: peewee.SelectBase) -> bool:
    """Whether reading every row of `query` is cheap enough to count them (always on SQLite)."""
    return not is_postgres(models.database) or plan(query)[0] <= MAX_EXACT_COST


def count(query: peewee.SelectBase) -> int:
    """The rows of `query`: exact when cheap to count, else About(PostgreSQL's estimate)."""
    if not is_postgres(models.database):
        return query.count()
    cost, rows = plan(query)
    return query.count() if cost <= MAX_EXACT_COST else About(rounded(rows))
