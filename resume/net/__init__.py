"""The trio network shell around the sans-I/O protocol core.

``resume`` (the core) never does I/O; this package is where datagrams, the clock, the
credential store and the kernel meet it: ``udp`` (socket loop), ``admission`` (what may
reach the core: header peek, fairness, overload) with ``ratelimit`` (its token buckets),
``lane`` (one socket + its responder + the inbox other threads post to), ``storelink``
(answering the core's lookups and commits), ``server`` (the responder service's lifecycle
and loops), ``gctune`` (the garbage collector's thresholds while serving),
``server_secret``, ``client`` (the initiator side), ``config``, ``metrics``, ``health``,
``hooks``, ``demo`` (the loopback deployment of ``ikeresume demo``) and ``cli`` (the
``serve`` and ``resume`` subcommands).
"""
