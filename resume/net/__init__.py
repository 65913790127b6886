"""The trio network shell around the sans-I/O protocol core.

``resume`` (the core) never does I/O; this package is where datagrams, the clock, the
credential store and the kernel meet it: ``udp`` (socket loop), ``ratelimit`` (early drop),
``server`` (the responder service), ``client`` (the initiator side), ``config``, ``metrics``,
``health``, ``hooks`` and ``cli`` (the ``serve`` and ``resume`` subcommands).
"""
