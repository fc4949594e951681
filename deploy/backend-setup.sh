#!/bin/sh
# backend-setup.sh - prepare a Linux host to be a dsrlb Direct Server Return backend.
#
# usage: backend-setup.sh VIP [--persist] [--undo]
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
#
# --persist also writes the boot configuration, so the setup survives a reboot:
#  - /etc/sysctl.d/90-dsrlb-backend.conf: arp_ignore=1 and arp_announce=2 for "all";
#  - the VIP on lo, for whatever configures the network at boot:
#    systemd-networkd when it is enabled or running (a link in
#    /etc/systemd/system/*.wants/systemd-networkd.service, or /run/systemd/netif/state):
#    /etc/systemd/network/10-dsrlb-lo.network, or a drop-in
#    /etc/systemd/network/<file>.network.d/90-dsrlb-lo.conf when another .network file
#    already matches lo (networkd applies only the first match). A .network file for lo
#    makes networkd manage lo, so ours also lists 127.0.0.1/8 and ::1/128 (::1 only while
#    IPv6 is on; networkd before v251 could drop the kernel's loopback addresses) and
#    keeps addresses others add at run time (KeepConfiguration=static);
#    else ifupdown when installed (ifup, and an /etc/network/interfaces that sources
#    interfaces.d): /etc/network/interfaces.d/dsrlb-lo, an "iface lo inet loopback" stanza
#    with up/down commands (ifupdown applies every stanza of an interface);
#    else it refuses before changing anything. DSRLB_SETUP_NET=networkd|ifupdown overrides
#    the choice.
# Every file carries a "Written by backend-setup.sh --persist" first line and the list of
# its VIPs; --undo --persist takes the VIP out and removes a file of its own once no VIP
# is left in it (the sysctl file with the last one), and touches no other file. --undo
# alone leaves the boot configuration in place. Nothing is reloaded: the running system
# already has the setup. DSRLB_SETUP_ROOT (default: empty, i.e. /) is prefixed to every
# path of the boot configuration, so a test can write it into a directory of its own.
# POSIX sh; needs `ip` (iproute2 or busybox) and /proc.

set -u

PROG=backend-setup.sh
STATE_DIR=${DSRLB_SETUP_STATE_DIR:-/run/dsrlb/backend-setup}
VIPS_FILE=$STATE_DIR/vips
SYSCTL_FILE=$STATE_DIR/sysctls
CONF=/proc/sys/net/ipv4/conf
ROOT=${DSRLB_SETUP_ROOT:-}
ROOT=${ROOT%/}
MARK="# Written by $PROG --persist"
SYSCTL_CONF=$ROOT/etc/sysctl.d/90-dsrlb-backend.conf
NETWORKD_DIR=$ROOT/etc/systemd/network
NETWORKD_FILE=$NETWORKD_DIR/10-dsrlb-lo.network
DROPIN=90-dsrlb-lo.conf
IFUPDOWN_FILE=$ROOT/etc/network/interfaces.d/dsrlb-lo

usage() {
    echo "usage: $PROG VIP [--persist] [--undo]" >&2
    echo "  Sets VIP as /32 on lo and arp_ignore=1, arp_announce=2 (all and every" >&2
    echo "  interface) so this host can serve a dsrlb DSR farm; --undo reverts it." >&2
    echo "  --persist also writes the boot configuration (sysctl.d, and the VIP on lo" >&2
    echo "  for systemd-networkd or ifupdown); --undo --persist removes it." >&2
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

# --- Boot configuration (--persist) ---

# Whether the file $1 was written by this script (its first line says so).
ours() {
    [ -f "$1" ] && head -n 1 "$1" | grep -qF "$MARK"
}

# The VIPs a file of ours lists.
file_vips() {
    sed -n 's/^# VIPs on lo: //p' "$1"
}

# Every file of ours that puts VIPs on lo, wherever this or an earlier run put it.
our_lo_files() {
    for f in "$NETWORKD_FILE" "$NETWORKD_DIR"/*.network.d/"$DROPIN" "$IFUPDOWN_FILE"; do
        if ours "$f"; then echo "$f"; fi
    done
}

# Writes $2 (plus a newline) to $1 unless it holds exactly that already; never replaces a
# file that is not ours.
put_file() {
    if [ -e "$1" ] && ! ours "$1"; then
        die "$1 exists and was not written by $PROG; left alone (add the setting there by hand)"
    fi
    [ -f "$1" ] && [ "$(cat "$1")" = "$2" ] && return 0
    mkdir -p "${1%/*}" || die "cannot create ${1%/*}"
    if ! { printf '%s\n' "$2" >"$1.tmp" && chmod 644 "$1.tmp" && mv "$1.tmp" "$1"; }; then
        die "cannot write $1"
    fi
    echo "wrote $1"
    CHANGES=$((CHANGES + 1))
}

# Removes $1 if it is ours (and its drop-in directory, if that is left empty).
remove_file() {
    ours "$1" || return 0
    rm -f "$1" || die "cannot remove $1"
    echo "removed $1"
    CHANGES=$((CHANGES + 1))
    case ${1%/*} in *.network.d) rmdir "${1%/*}" 2>/dev/null || true ;; esac
}

# Whether name $2 fits the networkd [Match] list $1: globs, a "!" inverts the list.
fits() {
    set -f
    neg=
    hit=
    for pat in $1; do
        case $pat in '!'*) neg=yes pat=${pat#!} ;; esac
        # shellcheck disable=SC2254 # a glob on purpose
        case $2 in $pat) hit=yes ;; esac
    done
    set +f
    if [ -n "$neg" ]; then [ -z "$hit" ]; else [ -n "$hit" ]; fi
}

# Whether the .network file $1 matches lo: its Name= fits "lo" and its Type= (if any) is
# loopback. A key naming a hardware property (MACAddress=, Path=, Driver=, ...) never fits
# lo; conditions on the host (Host=, Virtualization=, ...) are taken as met.
matches_lo() {
    names=
    types=
    hw=
    keys=$(awk '
        /^[ \t]*[#;]/ { next }
        /^[ \t]*\[/ { s = $0; gsub(/[ \t]/, "", s); next }
        s == "[Match]" && index($0, "=") {
            k = substr($0, 1, index($0, "=") - 1); gsub(/[ \t]/, "", k)
            print k, substr($0, index($0, "=") + 1)
        }' "$1")
    while read -r key value; do
        case $key in
            Name) names="$names $value" ;;
            Type) types="$types $value" ;;
            MACAddress | PermanentMACAddress | Path | Driver | Kind | Property | \
                WLANInterfaceType | SSID | BSSID) hw=yes ;;
        esac
    done <<KEYS
$keys
KEYS
    [ -z "$hw" ] || return 1
    [ -z "$types" ] || fits "$types" loopback || return 1
    [ -z "$names" ] || fits "$names" lo
}

# The .network file systemd-networkd applies to lo, if any: of all *.network files in its
# directories, by file name (a name in /etc hides the same name in /run and /usr/lib; an
# empty file or a link to /dev/null is masked), the first whose [Match] fits lo.
networkd_lo_file() {
    rank=0
    for dir in /etc/systemd/network /run/systemd/network /usr/local/lib/systemd/network \
        /usr/lib/systemd/network /lib/systemd/network; do
        rank=$((rank + 1))
        for f in "$ROOT$dir"/*.network; do
            if [ -e "$f" ] || [ -L "$f" ]; then echo "${f##*/} $rank $f"; fi
        done
    done | sort -k1,1 -k2,2n | awk '!seen[$1]++ { print $3 }' | while read -r f; do
        [ -s "$f" ] || continue
        if matches_lo "$f"; then
            echo "$f"
            break
        fi
    done
}

# Chooses where the VIP on lo goes at boot (NET, LO_FILE) before anything is changed.
persist_plan() {
    NET=${DSRLB_SETUP_NET:-}
    if [ -z "$NET" ]; then
        if [ -e "$ROOT/run/systemd/netif/state" ] ||
            ls "$ROOT"/etc/systemd/system/*.wants/systemd-networkd.service >/dev/null 2>&1; then
            NET=networkd
        elif [ -f "$ROOT/etc/network/interfaces" ] &&
            { [ -x "$ROOT/sbin/ifup" ] || [ -x "$ROOT/usr/sbin/ifup" ]; }; then
            NET=ifupdown
        else
            die "--persist: neither systemd-networkd (enabled or running) nor ifupdown found under ${ROOT:-/}; add $VIP/32 to lo in your network configuration, or set DSRLB_SETUP_NET=networkd|ifupdown"
        fi
    fi
    case $NET in
        networkd)
            LO_FILE=$(networkd_lo_file)
            if [ -z "$LO_FILE" ] || [ "$LO_FILE" = "$NETWORKD_FILE" ]; then
                LO_FILE=$NETWORKD_FILE
            else
                echo "lo is configured by $LO_FILE: adding the VIP with a drop-in"
                LO_FILE=$NETWORKD_DIR/${LO_FILE##*/}.d/$DROPIN
            fi
            ;;
        ifupdown)
            grep -Eq '^[[:space:]]*source(-directory)?[[:space:]]+(/etc/network/)?interfaces\.d' \
                "$ROOT/etc/network/interfaces" 2>/dev/null ||
                die "--persist: $ROOT/etc/network/interfaces does not read /etc/network/interfaces.d; add \"source /etc/network/interfaces.d/*\" to it"
            LO_FILE=$IFUPDOWN_FILE
            ;;
        *) die "DSRLB_SETUP_NET must be networkd or ifupdown, not $NET" ;;
    esac
    if [ -e "$LO_FILE" ] && ! ours "$LO_FILE"; then
        die "--persist: $LO_FILE exists and was not written by $PROG; left alone"
    fi
    # A sysctl file of that name from elsewhere (a package) is fine if it sets both.
    SYSCTL_OURS=yes
    if [ -e "$SYSCTL_CONF" ] && ! ours "$SYSCTL_CONF"; then
        if ! grep -Eq '^[[:space:]]*net\.ipv4\.conf\.all\.arp_ignore[[:space:]]*=[[:space:]]*1[[:space:]]*$' "$SYSCTL_CONF" ||
            ! grep -Eq '^[[:space:]]*net\.ipv4\.conf\.all\.arp_announce[[:space:]]*=[[:space:]]*2[[:space:]]*$' "$SYSCTL_CONF"; then
            die "--persist: $SYSCTL_CONF exists, was not written by $PROG and does not set arp_ignore = 1 and arp_announce = 2 for all"
        fi
        SYSCTL_OURS=
    fi
}

# Whether an ifupdown file other than ours brings lo up at boot ("auto lo").
has_auto_lo() {
    for f in "$ROOT/etc/network/interfaces" "$ROOT"/etc/network/interfaces.d/*; do
        if [ -f "$f" ] && ! ours "$f" &&
            grep -Eq '^[[:space:]]*(auto|allow-auto)([[:space:]]+[^[:space:]]+)*[[:space:]]+lo([[:space:]]|$)' "$f"; then
            return 0
        fi
    done
    return 1
}

# The content of lo file $1 for the VIPs $2...
render_lo() {
    file=$1
    shift
    echo "$MARK (dsrlb DSR backend): the VIPs on lo at boot."
    echo "# \`$PROG VIP --undo --persist\` takes a VIP out; the file goes with the last one."
    echo "# VIPs on lo: $*"
    case $file in
        "$NETWORKD_FILE")
            echo "# A .network file for lo makes systemd-networkd manage lo: the loopback addresses"
            echo "# are listed too, and addresses others add at run time are kept."
            echo "[Match]"
            echo "Name=lo"
            echo
            echo "[Network]"
            echo "KeepConfiguration=static"
            echo "Address=127.0.0.1/8"
            if [ "$(cat /proc/sys/net/ipv6/conf/lo/disable_ipv6 2>/dev/null)" = 0 ]; then
                echo "Address=::1/128"
            fi
            for v in "$@"; do echo "Address=$v/32"; done
            ;;
        *.network.d/*)
            echo "[Network]"
            for v in "$@"; do echo "Address=$v/32"; done
            ;;
        *)
            echo "# ifupdown applies every iface stanza of an interface: this one adds to the"
            echo "# \"iface lo inet loopback\" of /etc/network/interfaces."
            # "auto lo" twice is an error for ifupdown: only when no other file has it.
            has_auto_lo || echo "auto lo"
            echo "iface lo inet loopback"
            for v in "$@"; do
                echo "    up ip addr replace $v/32 dev lo"
                echo "    down ip addr del $v/32 dev lo || true"
            done
            ;;
    esac
}

SYSCTL_TEXT="$MARK; --undo --persist removes it with the last VIP.
# dsrlb DSR backend (docs/backends.md): never claim a VIP held on lo on the wire.
# arp_ignore=1: answer ARP only for addresses on the interface the request came in on.
# arp_announce=2: source ARP requests from the outgoing interface's own address, never a VIP.
# The kernel applies max(all, <interface>), so \"all\" covers every interface.
net.ipv4.conf.all.arp_ignore = 1
net.ipv4.conf.all.arp_announce = 2"

persist_setup() {
    vips=$VIP
    if ours "$LO_FILE"; then
        vips=$(file_vips "$LO_FILE")
        case " $vips " in *" $VIP "*) ;; *) vips="$vips $VIP" ;; esac
    fi
    # shellcheck disable=SC2086 # one argument per VIP
    put_file "$LO_FILE" "$(render_lo "$LO_FILE" $vips)"
    [ -z "$SYSCTL_OURS" ] || put_file "$SYSCTL_CONF" "$SYSCTL_TEXT"
}

persist_undo() {
    for f in $(our_lo_files); do
        vips=$(file_vips "$f")
        case " $vips " in *" $VIP "*) ;; *) continue ;; esac
        rest=
        for v in $vips; do [ "$v" = "$VIP" ] || rest="$rest $v"; done
        if [ -z "$rest" ]; then
            remove_file "$f"
        else
            # shellcheck disable=SC2086 # one argument per VIP
            put_file "$f" "$(render_lo "$f" $rest)"
        fi
    done
    if [ -z "$(our_lo_files)" ]; then
        remove_file "$SYSCTL_CONF"
    else
        echo "$SYSCTL_CONF kept: VIPs still persisted in $(our_lo_files | tr '\n' ' ')"
    fi
}

setup() {
    others=$(vip_elsewhere)
    [ -z "$others" ] || die "$VIP is also on: $others; remove it there first (that interface would answer ARP for the VIP)"
    # Where the boot configuration goes is decided before anything changes.
    [ -z "$PERSIST" ] || persist_plan
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
    [ -z "$PERSIST" ] || persist_setup
    if [ "$CHANGES" -eq 0 ]; then
        echo "$PROG: $VIP already set up, nothing to change"
    else
        echo "$PROG: $VIP set up ($CHANGES changes)"
    fi
}

undo() {
    CHANGES=0
    if [ -n "$PERSIST" ]; then
        persist_undo
    else
        for f in $(our_lo_files); do
            case " $(file_vips "$f") " in
                *" $VIP "*) echo "$VIP stays in $f (boot configuration): --undo --persist removes it" ;;
            esac
        done
    fi
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
PERSIST=
for arg in "$@"; do
    case $arg in
        --undo) MODE=undo ;;
        --persist) PERSIST=yes ;;
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
