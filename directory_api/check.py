"""Placeholder: `check` is built by issue #5."""

from directory_api.errors import UserError


def check(*args, **kwargs):
    raise UserError("`check` is not built yet (issue #5)")
