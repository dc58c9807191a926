"""The Flax door's parts: the inputs a model is fed, the layers chosen, the hidden states it
returns, and the plan that joins them for :mod:`ssc_jax.nets.capture`."""
