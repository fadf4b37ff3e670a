"""What unit, process and e2e tests share, one module a concern; import each thing from the module that owns it.

Every wait is bounded; a helper that gives up raises AssertionError with what it saw, so a broken promise
fails the test instead of hanging CI. The modules with fixtures (processes, sqs, workers, senders) are pytest plugins
registered in tests/conftest.py, which also has pytest rewrite the asserts of every module here.
"""
