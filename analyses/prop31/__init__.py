"""Prop. 3.1: norms and angles of two models' latents, Table 5, in several dtypes."""
