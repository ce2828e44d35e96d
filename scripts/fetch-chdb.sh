#!/usr/bin/env bash
# Fetch the embedded ClickHouse engine (chDB's libchdb) into a cache outside
# the work tree. Idempotent: instant when the verified file is already there.
#
#   TENANTSCOPE_CACHE   cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/tenantscope)
#
# Prints the path of the library on stdout.
set -euo pipefail

VERSION="26.7.3-stable.1"
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64)
    PKG="@chdb/lib-linux-x64-gnu"; LIB="libchdb.so"
    TGZ_SHA256="c0d32b129e988f2b9a9a31c9141aecf5e1e2453f9a079efc4d36ab8e3f92b2ad"
    LIB_SHA256="36ad4e999882821ef13cf2d0f52c93f48e6ee1b4498b35a201c23ce4b8d15bf5" ;;
  Darwin-arm64)
    PKG="@chdb/lib-darwin-arm64"; LIB="libchdb.so"
    TGZ_SHA256="${TENANTSCOPE_CHDB_SHA256:-}"; LIB_SHA256="" ;;
  Darwin-x86_64)
    PKG="@chdb/lib-darwin-x64"; LIB="libchdb.so"
    TGZ_SHA256="${TENANTSCOPE_CHDB_SHA256:-}"; LIB_SHA256="" ;;
  *)
    echo "fetch-chdb: no chDB build is pinned for $(uname -s)-$(uname -m); point --chdb-lib at a libchdb you built" >&2
    exit 1 ;;
esac

CACHE="${TENANTSCOPE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tenantscope}"
DEST="$CACHE/chdb/$VERSION"
OUT="$DEST/$LIB"
STAMP="$OUT.verified"

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# Fast path: the library is there and was verified when it was unpacked
# (the stamp records size and mtime, so a changed file is checked again).
if [[ -f "$OUT" && -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(wc -c <"$OUT" | tr -d ' ') $(date -r "$OUT" +%s)" ]]; then
  echo "$OUT"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "fetch-chdb: npm is needed to fetch $PKG@$VERSION (install Node.js and npm, then run 'make chdb' again)" >&2
  exit 1
fi

mkdir -p "$DEST"
WORK="$(mktemp -d "$DEST/.fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "fetch-chdb: fetching $PKG@$VERSION (about 180 MB) into $DEST" >&2
(cd "$WORK" && npm pack --silent "$PKG@$VERSION" >/dev/null)
TGZ="$(ls "$WORK"/*.tgz)"

if [[ -n "$TGZ_SHA256" ]]; then
  got="$(sha256 "$TGZ")"
  if [[ "$got" != "$TGZ_SHA256" ]]; then
    echo "fetch-chdb: checksum mismatch for $PKG@$VERSION: got $got, want $TGZ_SHA256; refusing to use it" >&2
    exit 1
  fi
else
  echo "fetch-chdb: no pinned checksum for this platform; relying on npm's integrity check (set TENANTSCOPE_CHDB_SHA256 to pin one)" >&2
fi

tar -xzf "$TGZ" -C "$WORK" "package/$LIB"
if [[ -n "$LIB_SHA256" ]]; then
  got="$(sha256 "$WORK/package/$LIB")"
  if [[ "$got" != "$LIB_SHA256" ]]; then
    echo "fetch-chdb: checksum mismatch for $LIB: got $got, want $LIB_SHA256" >&2
    exit 1
  fi
fi
mv -f "$WORK/package/$LIB" "$OUT"
echo "$(wc -c <"$OUT" | tr -d ' ') $(date -r "$OUT" +%s)" >"$STAMP"
echo "fetch-chdb: verified $OUT" >&2
echo "$OUT"
