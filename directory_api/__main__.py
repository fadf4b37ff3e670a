from directory_api.launcher import refuse_old_python

refuse_old_python("-m directory_api")

from directory_api.cli import main  # noqa: E402 (after the check, which Python 3.6 to 3.10 must reach)

main()
