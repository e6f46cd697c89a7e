from fmnist_lightning.commands.main import main

raise SystemExit(main())
