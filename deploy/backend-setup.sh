#!/bin/sh
# backend-setup.sh - prepare a Linux host to be a dsrlb Direct Server Return backend.
#
# usage: backend-setup.sh VIP [--undo]
#
# With DSR the load balancer only rewrites the destination MAC of a client's frame to this
# host's MAC; the IP header still says "to VIP". So this host must:
#  1. hold the VIP as a /32 on lo, so its kernel accepts those packets and answers from the
#     VIP, straight to the client;
#  2. never claim the VIP on the wire, or clients and switches would send VIP traffic here
#     instead of to the load balancer.
# Guides for other systems say "lo -arp" for step 2. On Linux that does nothing useful: lo
# never speaks ARP anyway, and by default Linux answers ARP on *any* interface for *any*
# local address (the weak host model), so eth0 would still answer for a VIP held on lo.
# Two sysctls do the job instead (as in ZEVENET's and LVS-DR's guides):
#  - arp_ignore=1: answer an ARP request only if the target address is configured on the
#    interface the request came in on; the VIP is on lo, so eth0 never answers for it.
#  - arp_announce=2: when this host sends an ARP request, take the sender address from the
#    outgoing interface's own addresses, never the VIP (a request "who has X, tell VIP"
#    would teach every listener that the VIP is at this host's MAC).
# The kernel applies max(all, <interface>) for both, so "all" alone would do; each current
# interface is set as well, as the guides do.
#
# Idempotent: a second run changes nothing and exits 0. --undo removes the VIP if this
# script added it and, once no VIP set up by it remains, restores the sysctls it changed.
# What it added is remembered in $DSRLB_SETUP_STATE_DIR (default /run/dsrlb/backend-setup,
# which, like the address and the sysctls themselves, does not survive a reboot).
# POSIX sh; needs `ip` (iproute2 or busybox) and /proc.

set -u

PROG=backend-setup.sh
STATE_DIR=${DSRLB_SETUP_STATE_DIR:-/run/dsrlb/backend-setup}
VIPS_FILE=$STATE_DIR/vips
SYSCTL_FILE=$STATE_DIR/sysctls
CONF=/proc/sys/net/ipv4/conf

usage() {
    echo "usage: $PROG VIP [--undo]" >&2
    echo "  Sets VIP as /32 on lo and arp_ignore=1, arp_announce=2 (all and every" >&2
    echo "  interface) so this host can serve a dsrlb DSR farm; --undo reverts it." >&2
    exit 2
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

valid_ipv4() {
    case $1 in
        '' | *[!0-9.]* | *..* | .* | *.) return 1 ;;
    esac
    old_ifs=$IFS
    IFS=.
    # shellcheck disable=SC2086 # splitting on dots is the point
    set -- $1
    IFS=$old_ifs
    [ $# -eq 4 ] || return 1
    for octet in "$@"; do
        case $octet in 0?*) return 1 ;; esac
        [ ${#octet} -le 3 ] && [ "$octet" -le 255 ] || return 1
    done
    return 0
}

vip_on_lo() {
    ip addr show dev lo | grep -qF " inet $VIP/32 "
}

# Interfaces other than lo that hold the VIP: they would answer ARP for it.
# (The last field of an "inet" line is the interface, or its label such as eth0:1.)
vip_elsewhere() {
    ip addr show | grep -F " inet $VIP/" | awk '$NF != "lo" && $NF !~ /^lo:/ { print $NF }'
}

recorded_vip() {
    [ -f "$VIPS_FILE" ] && grep -qxF "$VIP" "$VIPS_FILE"
}

# Writes $2 to the sysctl $CONF/$1, remembering the first original value for --undo.
ensure_sysctl() {
    path=$CONF/$1
    want=$2
    [ -w "$path" ] || die "cannot write $path (not root, or no IPv4 on this interface?)"
    have=$(cat "$path") || die "cannot read $path"
    [ "$have" = "$want" ] && return 0
    if ! { [ -f "$SYSCTL_FILE" ] && grep -q "^$1 " "$SYSCTL_FILE"; }; then
        echo "$1 $have $want" >>"$SYSCTL_FILE" || die "cannot write $SYSCTL_FILE"
    fi
    echo "$want" >"$path" || die "cannot write $path"
    echo "net.ipv4.conf.$(echo "$1" | tr / .): $have -> $want"
    CHANGES=$((CHANGES + 1))
}

setup() {
    others=$(vip_elsewhere)
    [ -z "$others" ] || die "$VIP is also on: $others; remove it there first (that interface would answer ARP for the VIP)"
    mkdir -p "$STATE_DIR" || die "cannot create $STATE_DIR"
    CHANGES=0
    if ! vip_on_lo; then
        ip addr add "$VIP/32" dev lo || die "cannot add $VIP/32 to lo"
        recorded_vip || echo "$VIP" >>"$VIPS_FILE" || die "cannot write $VIPS_FILE"
        echo "added $VIP/32 to lo"
        CHANGES=$((CHANGES + 1))
    fi
    ensure_sysctl all/arp_ignore 1
    ensure_sysctl all/arp_announce 2
    for dir in "$CONF"/*; do
        name=${dir##*/}
        case $name in all | default | lo) continue ;; esac
        ensure_sysctl "$name/arp_ignore" 1
        ensure_sysctl "$name/arp_announce" 2
    done
    if [ "$CHANGES" -eq 0 ]; then
        echo "$PROG: $VIP already set up, nothing to change"
    else
        echo "$PROG: $VIP set up ($CHANGES changes)"
    fi
}

undo() {
    CHANGES=0
    if recorded_vip; then
        if vip_on_lo; then
            ip addr del "$VIP/32" dev lo || die "cannot remove $VIP/32 from lo"
            echo "removed $VIP/32 from lo"
            CHANGES=$((CHANGES + 1))
        fi
        grep -vxF "$VIP" "$VIPS_FILE" >"$VIPS_FILE.new"
        mv "$VIPS_FILE.new" "$VIPS_FILE" || die "cannot update $VIPS_FILE"
    elif vip_on_lo; then
        echo "$VIP/32 on lo was not added by $PROG; left alone"
    fi
    if [ -s "$VIPS_FILE" ]; then
        echo "sysctls kept: still set up for $(tr '\n' ' ' <"$VIPS_FILE")"
        return 0
    fi
    if [ -f "$SYSCTL_FILE" ]; then
        while read -r name orig set_to; do
            path=$CONF/$name
            [ -w "$path" ] || continue
            # Somebody changed it since; their value wins.
            [ "$(cat "$path")" = "$set_to" ] || continue
            echo "$orig" >"$path" || die "cannot write $path"
            echo "net.ipv4.conf.$(echo "$name" | tr / .): $set_to -> $orig"
            CHANGES=$((CHANGES + 1))
        done <"$SYSCTL_FILE"
    fi
    rm -f "$VIPS_FILE" "$SYSCTL_FILE"
    rmdir "$STATE_DIR" 2>/dev/null || true
    if [ "$CHANGES" -eq 0 ]; then
        echo "$PROG: nothing to undo for $VIP"
    else
        echo "$PROG: undone for $VIP ($CHANGES changes)"
    fi
}

VIP=
MODE=setup
for arg in "$@"; do
    case $arg in
        --undo) MODE=undo ;;
        -h | --help) usage ;;
        -*) echo "$PROG: unknown option $arg" >&2; usage ;;
        *)
            [ -z "$VIP" ] || { echo "$PROG: more than one VIP given" >&2; usage; }
            VIP=$arg
            ;;
    esac
done
[ -n "$VIP" ] || { echo "$PROG: missing VIP" >&2; usage; }
valid_ipv4 "$VIP" || { echo "$PROG: not an IPv4 address: $VIP" >&2; usage; }
[ "$(id -u)" -eq 0 ] || die "must run as root (it changes addresses and sysctls)"
command -v ip >/dev/null 2>&1 || die "needs the ip command (iproute2 or busybox)"
[ -d "$CONF" ] || die "$CONF missing: is /proc mounted and IPv4 enabled?"

$MODE
