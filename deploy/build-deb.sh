#!/bin/sh
# Builds the dsrlb .deb (cargo-deb): both binaries, the systemd units and sysusers file, the
# man pages and shell completions generated from the binaries themselves, example configs,
# the backend setup script and the docs. Run from anywhere; prints the package's path.
#   cargo install cargo-deb   # once
#   deploy/build-deb.sh
set -eu
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null 2>&1 || { echo "build-deb: cargo install cargo-deb first" >&2; exit 1; }
cargo build --release -p node --bin dsrlb -p dsrctl
assets=target/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
target/release/dsrlb man > "$assets/man/dsrlb.8"
target/release/dsrctl man > "$assets/man/dsrctl.1"
gzip -9n "$assets/man/dsrlb.8" "$assets/man/dsrctl.1"
for shell in bash zsh fish; do
    target/release/dsrctl completion "$shell" > "$assets/completions/dsrctl.$shell"
done
# The release profile keeps debug info (for perf and backtraces); the package does not.
cargo deb -p node --no-build --strip "$@"
