"""The command line: the parser, the commands, joining a ``jax.distributed`` job, and the
one-line errors for what a user can mend."""
