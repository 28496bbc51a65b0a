#!/bin/sh
# The project's entry point on any machine: installs the stable toolchain that
# rust-toolchain.toml pins (rustup may be set not to install it by itself, RUSTUP_AUTO_INSTALL=0,
# and then every `cargo` command in this tree fails before xtask runs), then hands over to
# `cargo xtask`, which installs everything else. Idempotent; usage as `cargo xtask`:
#   ./xtask.sh demo | test | setup | build | bench
#   ./xtask.sh --toolchain-only   (install the pinned toolchain, then stop)
# Run it as root (CI does). With sudo, rustup must be on root's PATH or in root's ~/.cargo/bin
# (`sudo env PATH="$PATH" ./xtask.sh ...` keeps yours).
set -eu
cd "$(dirname "$0")"
PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
if ! command -v rustup >/dev/null 2>&1; then
    echo "xtask.sh: rustup is not on PATH; install it first (https://rustup.rs), then run this again" >&2
    exit 69
fi
channel=$(sed -n 's/^channel *= *"\([^"]*\)".*/\1/p' rust-toolchain.toml)
if [ -z "$channel" ]; then
    echo "xtask.sh: rust-toolchain.toml names no channel" >&2
    exit 78
fi
installed=$(rustup component list --installed --toolchain "$channel" 2>/dev/null || true)
for component in clippy rustfmt; do
    if ! printf '%s\n' "$installed" | grep -q "^$component"; then
        echo "xtask.sh: installing the pinned toolchain $channel with $component" >&2
        rustup toolchain install "$channel" --profile minimal --component clippy --component rustfmt
        break
    fi
done
if [ "${1:-}" = "--toolchain-only" ]; then
    exit 0
fi
exec cargo xtask "$@"
