"""Independent recomputations, for ``tests/test_validate.py``, of the guidance curve's verdicts
(``analyses/digits/guidance.py``): the lowest read-back share of each variant, from the hits the
run wrote to ``<report>/guidance_curve/results.zarr``."""

import xarray as xr

__all__ = ["RECOMPUTE", "guidance_row"]


def guidance_row(run, key):
    """min over (model, guidance) of hits / n, for the clipped or the unclipped variant."""
    res = xr.open_zarr(run.report / "guidance_curve" / "results.zarr", consolidated=False).load()
    clip = key.endswith("_clipped")
    hits = res.hits.values[list(res.curve_clip.values).index(clip)]
    return float(hits.min() / res.attrs["n"])


RECOMPUTE = {"digits_guidance_readback_clipped": guidance_row, "digits_guidance_readback_unclipped": guidance_row}
