"""directory-api: the Export Directory enrolment service."""

__version__ = "1.0.0"
