"""ikeresume protocol: sans-I/O resumption state machines, wire codec and key schedule."""
