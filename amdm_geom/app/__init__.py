"""The application: the command line, validate, sweeps on dask, the report, and the runner that
ties analyses to their stores."""
