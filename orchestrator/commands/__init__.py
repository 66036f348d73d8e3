"""The ``viewcoop`` subcommands, one module each: ``register(subparsers)`` adds the
command's parser; its handler imports the heavy libraries (torch, Ray, MLflow) only
when it runs, so ``viewcoop --help`` and config errors answer at once."""
