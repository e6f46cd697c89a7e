from fmnist_lightning.cli import main

raise SystemExit(main())
