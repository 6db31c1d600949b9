"""App. D.1: is the schedule Gaussian enough (moments, forward normality, trajectories)."""
