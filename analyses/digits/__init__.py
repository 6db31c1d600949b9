"""The trained digits ecosystem: AMDM against single models and peers."""
