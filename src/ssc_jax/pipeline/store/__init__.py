"""Where an analysis keeps its files: output folders written all or nothing, the
locks on them, and the compressed SSC graph files of the graph cache."""
