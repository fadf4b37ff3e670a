"""Placeholder: `work` is built by issue #4."""

from directory_api.errors import UserError


def work(*args, **kwargs):
    raise UserError("`work` is not built yet (issue #4)")
