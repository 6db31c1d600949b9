"""Probes: thin scripts, one per experiment family, that build models, run the sampler with a
recorder and write ``data/runs/<name>.zarr``. (The sampler arrives with the next issue.)"""
