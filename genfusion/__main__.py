from genfusion.cli import main

raise SystemExit(main())
