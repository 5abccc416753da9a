"""Pure admission and quota decisions from numbers: no I/O, the clock is passed in."""
