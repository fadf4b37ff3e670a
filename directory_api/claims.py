"""Lease claims: take the due rows of a table for a while, in one statement, so several workers share it.

The pattern of the database queue's receive and of the e-mail sender's
claim: UPDATE ... SET <the lease> WHERE id IN (SELECT id ... WHERE <due>
ORDER BY <due time> LIMIT n FOR UPDATE SKIP LOCKED) RETURNING. On PostgreSQL
the lock clause lets two workers claim at once without waiting on each other
or taking the same row; SQLite runs one writer at a time, so the same UPDATE
without it is enough there.
"""

from collections.abc import Mapping

import peewee

from directory_api.db import is_postgres


def lease_claim(
    model: type[peewee.Model], *, due: peewee.Expression, order_by: peewee.Field, limit: int,
    lease: Mapping[peewee.Field, object],
) -> peewee.ModelUpdate:
    """The UPDATE that claims up to `limit` rows matching `due`, oldest `order_by` first, setting `lease` on each.

    Add .returning(...) for the rows claimed.
    """
    key = model._meta.primary_key
    assert isinstance(key, peewee.Field), f"{model.__name__} has no primary key to claim by"
    claimable = model.select(key).where(due).order_by(order_by).limit(limit)
    if is_postgres(model._meta.database):
        claimable = claimable.for_update(skip_locked=True)
    return model.update(dict(lease)).where(key.in_(claimable))
