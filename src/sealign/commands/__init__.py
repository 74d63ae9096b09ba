"""Sub-commands of the ``sealign`` CLI. Each module defines HELP, add_arguments(parser) and run(args)."""
