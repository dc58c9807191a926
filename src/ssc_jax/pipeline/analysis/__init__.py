"""The computations: settings, inputs, each layer's SSC graph and what the paper
reads from the graphs. Every function returns a typed result and writes nothing but the
graph cache."""
