"""Pure protocol core: no I/O, no clock, no sockets. Data in, decisions out."""
