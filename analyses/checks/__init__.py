"""The toolkit's checks of itself: eq. (4) against diffusers, every recorded step and shift, closed forms."""
