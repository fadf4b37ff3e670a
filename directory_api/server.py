"""Placeholder: `serve` is built by issue #3."""

from directory_api.errors import UserError


def serve(*args, **kwargs):
    raise UserError("`serve` is not built yet (issue #3)")
