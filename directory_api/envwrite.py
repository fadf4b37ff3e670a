"""Placeholder: `env_write` is built by issue #5."""

from directory_api.errors import UserError


def env_write(*args, **kwargs):
    raise UserError("`env_write` is not built yet (issue #5)")
