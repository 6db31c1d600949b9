"""Lemma A.1 and Prop. 3.2: the Gaussian shell and the shifted latent's membership."""
