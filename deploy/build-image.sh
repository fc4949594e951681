#!/bin/sh
# build-image.sh - build the dsrlb container image without pulling any base image.
#
# usage: deploy/build-image.sh [--tag TAG] [--bin-dir DIR]
#
# Stages a root filesystem from binaries this machine already has, then runs `docker build`
# of deploy/Dockerfile (FROM scratch) over it:
#  - dsrlb and dsrctl from the release build (`cargo build --release -p node -p dsrctl`), found
#    in --bin-dir, else $CARGO_TARGET_DIR/release, else <repo>/target/release; debug info is
#    stripped from the copies when `strip` is installed;
#  - every shared library `ldd` lists for them, and the dynamic loader, at the same paths;
#  - a statically linked busybox (Debian's busybox-static) as /bin/busybox with a link per
#    applet: `sh` and `ip` for the backends' VIP on lo, `wget` for a client to try the VIP.
# Nothing is downloaded: an air-gapped machine with Docker, cargo and busybox-static can run it.
#
# It also creates deploy/secrets/cluster.token and deploy/secrets/admin.token (random, one
# each) when they are missing: docker-compose.yml hands them to the containers as secrets.
# Set DSRLB_SECRETS=DIR to create them in DIR instead (the compose file reads the same
# variable). Existing token files are never overwritten.
#
# Environment: BUSYBOX (path of a static busybox; default: `busybox` on PATH), DOCKER
# (default: docker), DSRLB_SECRETS (see above).

set -eu

PROG=build-image.sh
die() {
    echo "$PROG: $*" >&2
    exit 1
}

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
tag=dsrlb:local
bin_dir=

while [ $# -gt 0 ]; do
    case $1 in
        --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag=$2; shift 2 ;;
        --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a value"; bin_dir=$2; shift 2 ;;
        -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

if [ -z "$bin_dir" ]; then
    bin_dir=${CARGO_TARGET_DIR:-$repo/target}/release
fi
for b in dsrlb dsrctl; do
    [ -x "$bin_dir/$b" ] ||
        die "$bin_dir/$b is missing: run 'cargo build --release -p node -p dsrctl' first (or pass --bin-dir)"
done

busybox=${BUSYBOX:-$(command -v busybox || true)}
[ -n "$busybox" ] && [ -x "$busybox" ] ||
    die "no busybox found: install Debian's busybox-static (or set BUSYBOX=/path/to/static/busybox)"
# A dynamic busybox would need its own libraries, and is not what the image promises.
if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked: install Debian's busybox-static (or set BUSYBOX)"
fi

docker=${DOCKER:-docker}
command -v "$docker" >/dev/null 2>&1 || die "$docker not found"

# Tokens for the compose secrets (never printed).
secrets=${DSRLB_SECRETS:-$here/secrets}
mkdir -p "$secrets"
chmod 700 "$secrets"
for name in cluster admin; do
    f=$secrets/$name.token
    # The node refuses a token file that group or others can read (docs/design.md#config).
    # The containers run as uid 0 without CAP_DAC_OVERRIDE, so the files must belong to
    # uid 0: run this script as root (or `chown 0:0` them afterwards).
    [ -s "$f" ] && { chmod 600 "$f" || die "cannot chmod $f"; continue; }
    token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    [ ${#token} -eq 32 ] || die "cannot read random bytes for $f"
    (umask 077 && printf '%s\n' "$token" >"$f") || die "cannot write $f"
    echo "$PROG: created $f"
done

stage=$(mktemp -d "${TMPDIR:-/tmp}/dsrlb-image.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
root=$stage/rootfs
mkdir -p "$root/usr/bin" "$root/bin" "$root/etc/dsrlb" "$root/var/lib/dsrlb" "$root/tmp" \
    "$root/run"
chmod 1777 "$root/tmp"

for b in dsrlb dsrctl; do
    if command -v strip >/dev/null 2>&1; then
        strip --strip-debug -o "$root/usr/bin/$b" "$bin_dir/$b" || die "strip $b failed"
    else
        cp "$bin_dir/$b" "$root/usr/bin/$b"
    fi
done

# Libraries and the loader: every absolute path ldd prints ("libc.so.6 => /lib/...",
# "/lib64/ld-linux-x86-64.so.2 (0x...)"); linux-vdso has none and lives in the kernel.
libs=$(ldd "$bin_dir/dsrlb" "$bin_dir/dsrctl" |
    awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\// && $i !~ /:$/) print $i }' | sort -u)
[ -n "$libs" ] || die "ldd listed no libraries for $bin_dir/dsrlb"
for lib in $libs; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib" || die "cannot copy $lib"
done

cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done

# glibc reads these for names (compose service names come from Docker's /etc/hosts).
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"

cp "$here/Dockerfile" "$stage/Dockerfile"
version=$("$bin_dir/dsrlb" --version 2>/dev/null || echo dsrlb)
echo "$PROG: building $tag ($version) from $bin_dir"
"$docker" build --quiet --label "org.opencontainers.image.version=$version" -t "$tag" "$stage"
echo "$PROG: built $tag"
