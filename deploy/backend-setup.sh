#!/bin/sh
# backend-setup.sh - prepare a Linux host to be a dsrlb Direct Server Return backend.
#
# usage: backend-setup.sh VIP [--persist] [--undo]
#
# VIP is an IPv4 or an IPv6 address. With DSR the load balancer only rewrites the
# destination MAC of a client's frame to this host's MAC; the IP header still says "to VIP".
# So this host must:
#  1. hold the VIP on lo (IPv4 as a /32, IPv6 as a /128), so its kernel accepts those
#     packets and answers from the VIP, straight to the client;
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
# An IPv6 VIP needs no sysctl, and none is changed for it (checked in network namespaces
# on Linux 6.18; docs/design.md#packet-walk):
#  - Neighbor Discovery is strict where ARP is weak: Linux answers a Neighbor Solicitation
#    only for an address configured on the interface it came in on (ndisc_recv_ns looks the
#    target up on the receiving device), so eth0 never answers for a VIP held on lo: no
#    arp_ignore is needed, and IPv6 has none. IP forwarding does not change it (proxy NDP
#    answers only for explicit proxy entries; a /128 has no subnet-router anycast).
#  - a Neighbor Solicitation this host sends takes the source of the packet waiting for it
#    only when that address is on the outgoing interface, else the interface's link-local
#    address, so a reply from the VIP never announces it: no arp_announce is needed.
#  - an address on lo gets no duplicate address detection and is never advertised on the
#    other interfaces (no unsolicited Neighbor Advertisement, no MLD report), so "nodad"
#    changes nothing there.
# What an IPv6 VIP does need is IPv6 on lo: with net.ipv6.conf.lo.disable_ipv6 = 1 (which
# net.ipv6.conf.all.disable_ipv6 = 1 sets on every interface) the kernel refuses the address,
# and setting it later deletes the address. The script then stops with an error instead of
# turning IPv6 on: whether a host runs IPv6 is that host's policy, not a side effect of
# preparing a backend. It warns about other interfaces with IPv6 off, since VIP traffic
# arriving on them is dropped. Unlike an IPv4 address, an IPv6 one also goes when lo goes
# down (keep_addr_on_down = 0): run the script again after that.
# The ARP sysctls are set for an IPv4 VIP only.
#
# Idempotent: a second run changes nothing and exits 0. --undo removes the VIP if this
# script added it and, once no IPv4 VIP set up by it remains, restores the sysctls it
# changed (an IPv6 VIP never needed them).
# What it added is remembered in $DSRLB_SETUP_STATE_DIR (default /run/dsrlb/backend-setup,
# which, like the address and the sysctls themselves, does not survive a reboot).
#
# --persist also writes the boot configuration, so the setup survives a reboot:
#  - /etc/sysctl.d/90-dsrlb-backend.conf: arp_ignore=1 and arp_announce=2 for "all" (for an
#    IPv4 VIP; nothing for an IPv6 one);
#  - the VIP on lo, for whatever configures the network at boot (one file for both
#    families: "Address=VIP/32" or "Address=VIP/128"; "up ip addr replace VIP/32 dev lo" or
#    ".../128", ip taking the family from the address):
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
# is left in it (the sysctl file with the last IPv4 one), and touches no other file. --undo
# alone leaves the boot configuration in place. Nothing is reloaded: the running system
# already has the setup. DSRLB_SETUP_ROOT (default: empty, i.e. /) is prefixed to every
# path of the boot configuration, so a test can write it into a directory of its own.
# An IPv6 VIP is written in its canonical form (RFC 5952, as ip prints it), so
# 2001:DB8:0::0100 and 2001:db8::100 are one VIP; link-local, multicast, unspecified,
# loopback and IPv4-mapped or -compatible addresses are refused.
# POSIX sh; needs `ip` (iproute2 or busybox), awk and /proc.

set -u

PROG=backend-setup.sh
STATE_DIR=${DSRLB_SETUP_STATE_DIR:-/run/dsrlb/backend-setup}
VIPS_FILE=$STATE_DIR/vips
SYSCTL_FILE=$STATE_DIR/sysctls
CONF=/proc/sys/net/ipv4/conf
CONF6=/proc/sys/net/ipv6/conf
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
    echo "  Sets an IPv4 VIP as /32 on lo and arp_ignore=1, arp_announce=2 (all and" >&2
    echo "  every interface), or an IPv6 VIP as /128 on lo (no sysctl needed), so this" >&2
    echo "  host can serve a dsrlb DSR farm; --undo reverts it." >&2
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

# Prints the canonical form (RFC 5952, as inet_ntop and so ip print it) of the IPv6
# address $1, or a reason it is not one fit for a VIP on stderr, returning 1.
canon_ipv6() {
    printf '%s\n' "$1" | awk '
        function hex(s,   i, v) {
            v = 0
            for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
            return v
        }
        function bad(why) { print why > "/dev/stderr"; failed = 1; exit 1 }
        NR > 1 { bad("not an IPv6 address") }
        {
            a = tolower($0)
            if (a ~ /\//) bad("give the address alone, without a prefix length (it goes on lo as /128)")
            if (a ~ /%/) bad("not an IPv6 address: a VIP has no zone (%...)")
            if (a ~ /[.]/) bad("not an IPv6 address: write it in hexadecimal groups only")
            if (a !~ /^[0-9a-f:]+$/ || a ~ /:::/) bad("not an IPv6 address")
            p = index(a, "::")
            if (p) {
                head = substr(a, 1, p - 1)
                tail = substr(a, p + 2)
                if (index(tail, "::")) bad("not an IPv6 address: \"::\" twice")
            } else {
                head = a
                tail = ""
            }
            nh = head == "" ? 0 : split(head, h, ":")
            nt = tail == "" ? 0 : split(tail, t, ":")
            if (p ? nh + nt > 7 : nh != 8) bad("not an IPv6 address: not 8 groups")
            n = 0
            for (i = 1; i <= nh; i++) g[n++] = h[i]
            for (i = 0; i < 8 - nh - nt; i++) g[n++] = "0"
            for (i = 1; i <= nt; i++) g[n++] = t[i]
            for (i = 0; i < 8; i++) {
                if (g[i] !~ /^[0-9a-f][0-9a-f]?[0-9a-f]?[0-9a-f]?$/) bad("not an IPv6 address: bad group \"" g[i] "\"")
                v[i] = hex(g[i])
            }
            if (v[0] + v[1] + v[2] + v[3] + v[4] == 0)
                bad("unspecified, loopback, IPv4-mapped or IPv4-compatible: not a VIP")
            if (v[0] >= 65280) bad("a multicast address (ff00::/8): not a VIP")
            if (v[0] >= 65152 && v[0] < 65216) bad("a link-local address (fe80::/10): not a VIP")
            # The longest run of two or more zero groups becomes "::", the first of equals.
            best = -1
            len = 1
            for (i = 0; i < 8; i++) {
                if (v[i]) continue
                for (j = i; j < 8 && !v[j]; j++) ;
                if (j - i > len) { best = i; len = j - i }
                i = j
            }
            out = ""
            for (i = 0; i < 8; i++) {
                if (i == best) {
                    out = out "::"
                    i += len - 1
                    continue
                }
                if (out != "" && out !~ /::$/) out = out ":"
                out = out sprintf("%x", v[i])
            }
            print out
        }
        END { if (!NR && !failed) bad("not an IPv6 address") }'
}

vip_on_lo() {
    ip addr show dev lo | grep -qF " $INET $VIP/$PLEN "
}

# Interfaces other than lo that hold the VIP: they would answer ARP or Neighbor
# Solicitations for it.
# (IPv4: the last field of an "inet" line is the interface, or its label such as eth0:1.
# IPv6: the interface is named by the "N: name:" line above; lo holding the VIP with another
# prefix length is reported too, as the kernel takes it for the same address.)
vip_elsewhere() {
    if [ "$FAMILY" = 4 ]; then
        ip addr show | grep -F " inet $VIP/" | awk '$NF != "lo" && $NF !~ /^lo:/ { print $NF }'
    else
        ip -f inet6 addr show | awk -v a="$VIP/" '
            /^[0-9]+:/ { dev = $2; sub(/:$/, "", dev); sub(/@.*/, "", dev); next }
            $1 == "inet6" && index($2, a) == 1 {
                if (dev != "lo") print dev
                else if ($2 != a "128") print "lo (as " $2 ")"
            }'
    fi
}

# An IPv6 VIP needs IPv6 on lo; turning it on is the host's policy, not ours.
check_ipv6() {
    [ -e "$CONF6/lo/disable_ipv6" ] ||
        die "IPv6 is not available on this host ($CONF6/lo missing: a kernel without IPv6, or booted with ipv6.disable=1); an IPv6 VIP cannot be held on lo"
    if [ "$(cat "$CONF6/lo/disable_ipv6")" != 0 ]; then
        all=
        [ "$(cat "$CONF6/all/disable_ipv6" 2>/dev/null)" != 1 ] ||
            all="; net.ipv6.conf.all.disable_ipv6 = 1 turned it off on every interface"
        die "IPv6 is disabled on lo (net.ipv6.conf.lo.disable_ipv6 = 1$all), so the kernel refuses $VIP/128 there. $PROG does not turn IPv6 on: that is this host's policy. To serve an IPv6 VIP, enable it (sysctl -w net.ipv6.conf.lo.disable_ipv6=0, and on the interface facing the load balancer; in /etc/sysctl.d to keep it) and run $PROG again"
    fi
    off=
    for dir in "$CONF6"/*; do
        name=${dir##*/}
        case $name in all | default | lo) continue ;; esac
        [ "$(cat "$dir/disable_ipv6" 2>/dev/null)" != 1 ] || off="$off $name"
    done
    [ -z "$off" ] ||
        echo "$PROG: note: IPv6 is disabled on$off; VIP traffic arriving there is dropped" >&2
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
            die "--persist: neither systemd-networkd (enabled or running) nor ifupdown found under ${ROOT:-/}; add $VIP/$PLEN to lo in your network configuration, or set DSRLB_SETUP_NET=networkd|ifupdown"
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
    # A sysctl file of that name from elsewhere (a package) is fine if it sets both. An
    # IPv6 VIP needs no sysctl: its run leaves the file alone.
    SYSCTL_OURS=yes
    [ "$FAMILY" = 4 ] || SYSCTL_OURS=
    if [ -n "$SYSCTL_OURS" ] && [ -e "$SYSCTL_CONF" ] && ! ours "$SYSCTL_CONF"; then
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

# The prefix length of VIP $1 on lo: /128 for IPv6, /32 for IPv4.
plen() {
    case $1 in *:*) echo 128 ;; *) echo 32 ;; esac
}

# Whether the list $* holds an IPv4 VIP (one that needs the ARP sysctls).
has_ipv4() {
    for v in "$@"; do
        case $v in *:*) ;; *) return 0 ;; esac
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
            for v in "$@"; do echo "Address=$v/$(plen "$v")"; done
            ;;
        *.network.d/*)
            echo "[Network]"
            for v in "$@"; do echo "Address=$v/$(plen "$v")"; done
            ;;
        *)
            echo "# ifupdown applies every iface stanza of an interface: this one adds to the"
            echo "# \"iface lo inet loopback\" of /etc/network/interfaces; ip takes the family"
            echo "# (IPv4 or IPv6) from the address."
            # "auto lo" twice is an error for ifupdown: only when no other file has it.
            has_auto_lo || echo "auto lo"
            echo "iface lo inet loopback"
            for v in "$@"; do
                echo "    up ip addr replace $v/$(plen "$v") dev lo"
                echo "    down ip addr del $v/$(plen "$v") dev lo || true"
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
    left=
    for f in $(our_lo_files); do left="$left $(file_vips "$f")"; done
    # shellcheck disable=SC2086 # one argument per VIP
    if ! has_ipv4 $left; then
        remove_file "$SYSCTL_CONF"
    else
        echo "$SYSCTL_CONF kept: IPv4 VIPs still persisted in $(our_lo_files | tr '\n' ' ')"
    fi
}

setup() {
    [ "$FAMILY" = 4 ] || check_ipv6
    others=$(vip_elsewhere | tr '\n' ' ')
    others=${others% }
    if [ -n "$others" ]; then
        if [ "$FAMILY" = 4 ]; then
            die "$VIP is also on: $others; remove it there first (that interface would answer ARP for the VIP)"
        fi
        die "$VIP is also on: $others; remove it there first (an interface holding it answers Neighbor Solicitations for it; lo must hold it as /128)"
    fi
    # Where the boot configuration goes is decided before anything changes.
    [ -z "$PERSIST" ] || persist_plan
    mkdir -p "$STATE_DIR" || die "cannot create $STATE_DIR"
    CHANGES=0
    if ! vip_on_lo; then
        ip addr add "$VIP/$PLEN" dev lo || die "cannot add $VIP/$PLEN to lo"
        recorded_vip || echo "$VIP" >>"$VIPS_FILE" || die "cannot write $VIPS_FILE"
        echo "added $VIP/$PLEN to lo"
        CHANGES=$((CHANGES + 1))
    fi
    # The ARP sysctls; Neighbor Discovery needs none (see the top of this file).
    if [ "$FAMILY" = 4 ]; then
        ensure_sysctl all/arp_ignore 1
        ensure_sysctl all/arp_announce 2
        for dir in "$CONF"/*; do
            name=${dir##*/}
            case $name in all | default | lo) continue ;; esac
            ensure_sysctl "$name/arp_ignore" 1
            ensure_sysctl "$name/arp_announce" 2
        done
    fi
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
            ip addr del "$VIP/$PLEN" dev lo || die "cannot remove $VIP/$PLEN from lo"
            echo "removed $VIP/$PLEN from lo"
            CHANGES=$((CHANGES + 1))
        fi
        grep -vxF "$VIP" "$VIPS_FILE" >"$VIPS_FILE.new"
        mv "$VIPS_FILE.new" "$VIPS_FILE" || die "cannot update $VIPS_FILE"
    elif vip_on_lo; then
        echo "$VIP/$PLEN on lo was not added by $PROG; left alone"
    fi
    # The ARP sysctls stay while an IPv4 VIP set up by this script does (IPv6 ones need none).
    v4=$(grep -v : "$VIPS_FILE" 2>/dev/null | tr '\n' ' ')
    if [ -n "$v4" ]; then
        echo "sysctls kept: still set up for $v4"
        done_undo
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
    rm -f "$SYSCTL_FILE"
    if [ -s "$VIPS_FILE" ]; then
        echo "IPv6 VIPs still set up (they need no sysctl): $(tr '\n' ' ' <"$VIPS_FILE")"
    else
        rm -f "$VIPS_FILE"
        rmdir "$STATE_DIR" 2>/dev/null || true
    fi
    done_undo
}

done_undo() {
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
case $VIP in
    *:*)
        canon=$(canon_ipv6 "$VIP" 2>&1) || { echo "$PROG: $VIP: $canon" >&2; usage; }
        VIP=$canon
        FAMILY=6 PLEN=128 INET=inet6
        ;;
    *)
        valid_ipv4 "$VIP" || { echo "$PROG: not an IPv4 or IPv6 address: $VIP" >&2; usage; }
        FAMILY=4 PLEN=32 INET=inet
        ;;
esac
[ "$(id -u)" -eq 0 ] || die "must run as root (it changes addresses and sysctls)"
command -v ip >/dev/null 2>&1 || die "needs the ip command (iproute2 or busybox)"
if [ "$FAMILY" = 4 ]; then
    [ -d "$CONF" ] || die "$CONF missing: is /proc mounted and IPv4 enabled?"
fi

$MODE
