"""Command-line interface: ``boltzclf <command> --help`` documents each command."""
