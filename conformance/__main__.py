import sys

from diffspec.conformance.cli import main

sys.exit(main())
