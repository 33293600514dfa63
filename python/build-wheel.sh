#!/usr/bin/env bash
# Builds the Python package's wheel as an index accepts it: abi3 (one wheel
# for CPython >= 3.9), manylinux2014 (glibc >= 2.17, linked with zig so the
# host's newer glibc does not leak in), stripped, and checked by maturin's
# auditwheel check and by auditwheel itself. Prints the wheel's path, tag
# and size.
#
#   bash python/build-wheel.sh            # into python/dist/
#   bash python/build-wheel.sh OUTDIR
#
# Needs the Rust toolchain and python3 (with venv: Debian's python3-venv is
# installed with apt-get when missing and possible). maturin, ziglang and
# auditwheel, at the versions pinned below, come from PyPI into a venv:
# $TOKENSTORE_WHEEL_TOOLS, by default wheel-tools/ in cargo's target
# directory (CARGO_TARGET_DIR, else python/target), which `cargo clean`
# removes.
#
# Without zig (TOKENSTORE_WHEEL_ZIG=0) the host's toolchain links the wheel,
# and it gets the manylinux tag of the host's glibc (manylinux_2_34 on
# Debian 12): accepted by an index, but only for systems as new as the host.
set -euo pipefail
# OUTDIR as the caller means it, before moving to python/.
out=$(realpath -m "${1:-$(dirname "$0")/dist}")
cd "$(dirname "$0")"

maturin_version=1.16.0
ziglang_version=0.15.2
auditwheel_version=6.8.2
# The oldest tag zig can target that the engine builds for.
compatibility=manylinux2014

mkdir -p "$out"

python=${PYTHON:-python3}
# The tools live in cargo's target directory, kept between runs: zig's path
# is part of every crate's build fingerprint, so tools at a new path each
# time would rebuild every crate each time.
if [[ -z "${TOKENSTORE_WHEEL_TOOLS:-}" ]]; then
  target_dir=$(cargo metadata --format-version 1 --no-deps |
    "$python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  TOKENSTORE_WHEEL_TOOLS=$target_dir/wheel-tools
fi
tools=$TOKENSTORE_WHEEL_TOOLS
if [[ ! -x "$tools/bin/python" ]]; then
  if ! "$python" -m venv "$tools" 2>/dev/null; then
    rm -rf "$tools"
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      echo "installing python3-venv (apt-get)"
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; } >/dev/null
    fi
    "$python" -m venv "$tools" || {
      echo "$python cannot make a venv: install python3-venv (Debian) and run again" >&2
      exit 1
    }
  fi
fi
"$tools/bin/python" -m pip install --quiet --disable-pip-version-check \
  "maturin==$maturin_version" "auditwheel==$auditwheel_version"

build=(--release --auditwheel check)
if [[ ${TOKENSTORE_WHEEL_ZIG:-1} == 0 ]]; then
  echo "building without zig: the wheel is tagged for this host's glibc"
else
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check "ziglang==$ziglang_version"
  build+=(--zig --compatibility "$compatibility")
fi


# Built apart, so that only this build's wheel is reported.
fresh=$(mktemp -d)
# maturin finds zig (python -m ziglang) through the venv's python on PATH.
PATH="$tools/bin:$PATH" "$tools/bin/maturin" build "${build[@]}" --out "$fresh"
built=("$fresh"/tokenstore-*.whl)
[[ ${#built[@]} -eq 1 && -f ${built[0]} ]] || { echo "maturin left ${#built[@]} wheels" >&2; exit 1; }
wheel=$out/$(basename "${built[0]}")
mv -f "${built[0]}" "$wheel"
rmdir "$fresh"

# A second opinion on the tag: auditwheel reads the symbol versions the
# library needs, and the wheel must claim no more than they allow.
report=$("$tools/bin/auditwheel" show "$wheel")
echo "$report"
policy=$(tr '\n' ' ' <<<"$report" | sed -n 's/.*consistent with the following platform tag: *"\([^"]*\)".*/\1/p')
if [[ -z $policy || $(basename "$wheel") != *"$policy"* ]]; then
  echo "auditwheel says ${policy:-not manylinux}, but the wheel is $(basename "$wheel")" >&2
  exit 1
fi
# Stripped (strip = true in pyproject.toml): no symbol table section left.
"$tools/bin/python" - "$wheel" <<'EOF'
import struct, sys, zipfile

with zipfile.ZipFile(sys.argv[1]) as wheel:
    elf = wheel.read(next(n for n in wheel.namelist() if n.startswith("tokenstore/_native")))
assert elf[:4] == b"\x7fELF" and elf[4] == 2 and elf[5] == 1, "not a 64-bit little-endian ELF file"
(shoff,) = struct.unpack_from("<Q", elf, 0x28)
shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
types = [struct.unpack_from("<I", elf, shoff + i * shentsize + 4)[0] for i in range(shnum)]
SHT_SYMTAB = 2
if SHT_SYMTAB in types:
    sys.exit("the native library still has its symbol table: not stripped")
EOF

name=$(basename "$wheel" .whl)
size=$(stat -c %s "$wheel")
echo "wheel: $wheel"
echo "tag:   ${name#tokenstore-*-}"
echo "size:  $size bytes ($(awk -v b="$size" 'BEGIN { printf "%.1f", b / 1048576 }') MiB)"
