"""Writing an analysis out: the output folder's files, and the Python API's
functions that analyse a network and write its report."""
