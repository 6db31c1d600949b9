"""Independent recomputations of the digits grid's verdict values (``tests/test_validate.py``): the
reference cell's mean paired difference in success, from the stored detections and targets, with
the arms named from the grid's spec by the naming rule (not from the verdict)."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

_OTHER = {"digits_grid_vs_position": "position@{tg}", "digits_grid_vs_colour": "colour@{tg}",
          "digits_grid_vs_composable": "composable@{tg}", "digits_grid_vs_superdiff_and": "superdiff_and@{tg}",
          "digits_grid_vs_ula": "ula@{tg}", "digits_grid_slerp_lerp": "amdm_lerp@{cell}",
          "digits_grid_eta": "amdm_eta{off}@{cell}", "digits_grid_stage_middle": "amdm_middle@{cell}",
          "digits_grid_stage_late": "amdm_late@{cell}", "digits_grid_role_order": "amdm_swapped@{cell}"}


def digits_grid_rows(run, key):
    """The reference cell's mean of AMDM's success minus the other arm's (the better single model: the
    single arm with the higher mean there)."""
    # (every variant's node keeps the grid's spec; the reference variant, unclipped, is in every grid)
    spec = json.loads(xr.open_zarr(run.report / "digits_grid" / "unclipped.zarr", consolidated=False).attrs["grid"])
    eco = spec["reference_ecosystem"]
    ds = xr.open_zarr(run.report / "digits_grid" / f"{eco}.zarr", consolidated=False).load()
    arms = [str(a) for a in ds.arm.values]
    hit = (ds.detected.values[:, :, :2] == ds.target.values[None, :, :2]).all(-1).astype(float)  # (arm, sample)
    success = {a: hit[i] for i, a in enumerate(arms)}
    T, s, g = spec["reference_steps"], spec["reference_s"], spec["reference_guidance"]
    tg, cell = f"T{T}_g{g:g}", f"T{T}_g{g:g}_s{s}"
    if key == "digits_grid_vs_better_single":
        other = max((f"position@{tg}", f"colour@{tg}"), key=lambda a: success[a].mean())
    else:
        other = _OTHER[key].format(tg=tg, cell=cell, off=f"{spec['eta_off']:g}")
    return float(np.mean(success[f"amdm@{cell}"] - success[other]))


PREFIXES = {"digits_grid_": digits_grid_rows}
