"""Bridges to IKE daemons and the kernel: XFRM netlink, strongSwan VICI, harvesting."""
