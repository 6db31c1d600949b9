"""App. G: rectified flow (geometry, and AMDM on exact flow models)."""
