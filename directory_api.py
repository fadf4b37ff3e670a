#!/usr/bin/env python3
"""Run the directory-api CLI from a checkout: python directory_api.py serve --debug"""

from directory_api.cli import main

if __name__ == "__main__":
    main()
