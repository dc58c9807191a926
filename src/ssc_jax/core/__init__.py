"""What every room shares: input checks and the memory policy. Depends on jax and numpy only."""
