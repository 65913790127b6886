#!/bin/sh
# libreswan updown hook: provision an ikeresume credential for every CHILD_SA that comes up,
# then run libreswan's own updown script.  See specs/libreswan.md (section 4).
#
#   conn road
#       leftupdown=/etc/ipsec.d/ikeresume-updown      # this file
#
# Set in pluto's environment (e.g. a systemd drop-in for ipsec.service):
#   IKERESUME_ROLE      initiator | responder -- this peer's resumption role (required)
#   IKERESUME_DB        the cache (default /var/lib/ikeresume/cache.db)
#   IKERESUME_MASTER_KEY_FILE  (default /etc/ikeresume/master.key)
#   IKERESUME_ID_TYPE   how libreswan's IDs map to ours (default fqdn: "@name" -> fqdn:name)
#
# $SPI_IN and $SPI_OUT name the CHILD_SA's two SPIs (libreswan 4.10 gives the outbound SPI
# as SPI_IN; `describe --spi` takes them in any order and finds which is which).  Do not
# use $PLUTO_SA_REQID: libreswan 4.10 passes the connection's base reqid, not the kernel
# SAs' (base + 1 for ESP).  A failure only means a full IKE next time; it never fails the SA.

: "${IKERESUME_DB:=/var/lib/ikeresume/cache.db}"
: "${IKERESUME_MASTER_KEY_FILE:=/etc/ikeresume/master.key}"
: "${IKERESUME_ID_TYPE:=fqdn}"
export IKERESUME_DB IKERESUME_MASTER_KEY_FILE

case "$PLUTO_VERB" in
up-host*|up-client*)
    if [ "$IKERESUME_ROLE" = responder ]; then
        I=$PLUTO_PEER R=$PLUTO_ME TSI=$PLUTO_PEER_CLIENT TSR=$PLUTO_MY_CLIENT
        IDI=$PLUTO_PEER_ID IDR=$PLUTO_MY_ID
    else
        I=$PLUTO_ME R=$PLUTO_PEER TSI=$PLUTO_MY_CLIENT TSR=$PLUTO_PEER_CLIENT
        IDI=$PLUTO_MY_ID IDR=$PLUTO_PEER_ID
    fi
    if ! ikeresume xfrm describe --initiator "$I" --responder "$R" \
            --spi "$SPI_IN" --spi "$SPI_OUT" \
            --id-i "$IKERESUME_ID_TYPE:${IDI#@}" --id-r "$IKERESUME_ID_TYPE:${IDR#@}" \
            --tsi "$TSI" --tsr "$TSR" \
        | ikeresume cache bootstrap --role "$IKERESUME_ROLE" - --json; then
        logger -t ikeresume "bootstrap of $PLUTO_CONNECTION failed: full IKE next time"
    fi
    ;;
esac
exec /usr/libexec/ipsec/_updown "$@"
