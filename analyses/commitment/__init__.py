"""When each model commits to each attribute on the exact GMM family, and the predicted speciation time."""
