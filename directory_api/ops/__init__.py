"""Operating the service: the figures of `status`, the rows of `export`, the console's queries, and `redrive`.

One module a job: status.py, export.py, queries.py (the console's lookups)
and redrive.py, each with the command cli.py wires settings into. The
commands and the console read through here, so they show the same data.
Every query the console runs is a page (a LIMIT on an index, walked with a
keyset, never OFFSET) or a lookup by an indexed key, so the console never
competes with the worker for long; the indexes are migrations._operating_it's.
"""

from directory_api.errors import UserError


class Unanswered(UserError):
    """A queue or the database did not answer a command: exit 1, naming it."""

    exit_code = 1
