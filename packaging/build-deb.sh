#!/bin/sh
# Builds the Debian package: the release binary, then (from that binary, so they always match
# its options) the man pages, shell completions and default configuration into
# packaging/generated/, then `cargo deb --no-build`. Prints the path of the .deb.
# Needs cargo-deb: cargo install cargo-deb --locked
set -eu

cd "$(dirname "$0")/.."
gen=packaging/generated

cargo build --release >&2
target_dir=${CARGO_TARGET_DIR:-$(cargo metadata --no-deps --format-version 1 |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}
bin=$target_dir/release/kavwatch
sum=$(sha256sum "$bin" | cut -d' ' -f1)

rm -rf "$gen"
mkdir -p "$gen/man" "$gen/completions"
"$bin" generate man "$gen/man" >/dev/null
gzip -9n "$gen"/man/*.1
"$bin" generate completions "$gen/completions" >/dev/null
"$bin" generate config >"$gen/kavwatch.toml"

# --strip: the release profile keeps line tables for backtraces; the package does not need them.
deb=$(cargo deb --no-build --strip | tail -n 1)

# The target directory may be shared with other builds: the packaged binary must be the one
# the man pages and completions came from.
if [ "$(sha256sum "$bin" | cut -d' ' -f1)" != "$sum" ]; then
    echo "build-deb.sh: $bin changed while packaging (a concurrent build?); run again" >&2
    exit 1
fi
echo "$deb"
