#!/usr/bin/env python3
"""Run the directory-api CLI from a checkout: python directory_api.py serve --debug"""

import os
import sys

# python -I leaves the script's directory off sys.path; this script is there to run that checkout.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from directory_api.launcher import refuse_old_python

if __name__ == "__main__":
    refuse_old_python(os.path.abspath(__file__))
    from directory_api.cli import main

    main()
