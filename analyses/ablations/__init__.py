"""Ablations on the exact GMM family (Tables 1-4, 6, 10, Figure 5)."""
