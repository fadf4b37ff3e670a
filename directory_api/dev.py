"""Placeholder: `dev` is built by issue #4."""

from directory_api.errors import UserError


def dev(*args, **kwargs):
    raise UserError("`dev` is not built yet (issue #4)")
