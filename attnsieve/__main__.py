from attnsieve.cli import main

raise SystemExit(main())
