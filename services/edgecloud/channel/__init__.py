"""The channel emulator: the air interface between users and the base-station gateway (paper eqs. 1-2)."""
