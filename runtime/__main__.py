"""`python -m diffspec.runtime`: the same as `diffspec-sample`."""

import sys

from diffspec.runtime.cli import main

sys.exit(main())
