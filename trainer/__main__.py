import sys

from diffspec.trainer.cli import main

sys.exit(main())
