"""``ikeresume agent``: a resident initiator that resumes on request and on its own.

Why resident: a resumption is one round trip, but a command that starts Python, imports the
core and opens the store pays hundreds of milliseconds before its first datagram -- more
than the full IKE it replaces.  The agent keeps the store open, the core loaded and the
XFRM socket bound; a request on its UNIX socket (:mod:`ikeshim.agent.wire`, sent by the
tiny native client ``ikeresume-resume`` in ``native/ctl``) costs only the exchange and the
install.  It also follows charon's VICI events (:mod:`ikeshim.agent.watch`): when the
IKE_SA of a connection configured ``keep_up`` goes away, it resumes at once and falls back
to a full IKE (VICI ``initiate``) when the responder refuses.  :mod:`ikeshim.agent.service`
owns the process; :mod:`ikeshim.agent.config` its TOML file.
"""
