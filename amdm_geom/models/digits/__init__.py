"""The ``digits`` mini-ecosystem: small pixel-space diffusion models trained here, on CPU, from
data a package ships (scikit-learn's 8x8 digits), so that AMDM's claims get verdicts on networks
that learned something, with ground truth a detector reads exactly.

- ``data``: 16x16 RGB images, one digit in one of 4 quadrants tinted one of 4 colours (three
  attributes: position, colour, digit class), rendered deterministically from a seed;
- ``detectors``: the attributes read back from any image (quadrant from the ink's centroid,
  colour from the ink-weighted mean RGB, digit class from a classifier of the 8x8 digits);
- ``net``: the network (a tiny diffusers ``UNet2DConditionModel`` with one learned token per
  attribute as its condition) and its denoiser;
- ``train``: the training specs of every model of the ecosystem and the training loop, under
  v-prediction (a VP schedule) or the rectified-flow objective (App. G: ``flow_base`` and its
  fine-tunes ``flow_position``, ``flow_colour``, sampled by Euler steps);
- ``zoo``: the shipped weights (``weights/``), loaded and checked against their recorded hashes.
"""
