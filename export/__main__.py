from diffspec.export.cli import main

raise SystemExit(main())
