#!/usr/bin/env bash
# Fetch binaries this project tests against from Debian packages, without touching the
# system's apt state or starting any service: containerd of several release lines, and the
# registry tools cosign and oras.
#
#   test/fetch-debian.sh NAME...
#
#   NAME      package      Debian suite   accepted upstream version
#   2.1       containerd   sid            2.x (sid may move past 2.1; the actual one is printed)
#   1.7       containerd   trixie         1.7.x
#   1.6       containerd   bookworm       1.6.x   (+ bookworm-updates, bookworm-security)
#   cosign-2  cosign       trixie         2.x (signs in the legacy .sig tag format)
#   cosign-3  cosign       sid            3.x (signs in the Sigstore bundle format)
#   oras      oras         sid            1.x
#
# Each is unpacked (dpkg -x) into
#   ${WASMCELL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmcell}/containerd/NAME/  (containerd)
#   ${WASMCELL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmcell}/tools/NAME/       (tools)
# so that DIR/usr/bin/containerd and DIR/usr/bin/ctr, or DIR/usr/bin/cosign or oras, exist.
# A finished one is skipped on later calls. Prints one line per name:
#   NAME=DIR
# Progress goes to stderr. The Debian mirror is taken from the system's own
# apt sources (the entry whose Suites include bookworm).
set -euo pipefail

die() { echo "fetch-debian: $*" >&2; exit 1; }
log() { echo "fetch-debian: $*" >&2; }

[ $# -ge 1 ] || die "usage: $0 NAME... (NAME: 2.1, 1.7, 1.6, cosign-2, cosign-3, oras)"

CACHE_BASE="${WASMCELL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmcell}"
CACHE_ROOT="$CACHE_BASE/containerd"
TOOLS_ROOT="$CACHE_BASE/tools"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# uri_for_suite SUITE: URI of the system apt source that serves SUITE.
uri_for_suite() {
  local want=$1 f uri
  shopt -s nullglob
  for f in /etc/apt/sources.list.d/*.sources; do
    # deb822: stanzas separated by blank lines; take URIs of the stanza whose
    # Suites field lists the wanted suite (and whose Types include deb).
    uri=$(awk -v want="$want" '
      function flush() { if (ok && isdeb && u != "") { print u; found=1; exit } ok=0; isdeb=0; u="" }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]*#/ { next }
      tolower($1) == "types:"  { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb=1 }
      tolower($1) == "uris:"   { u = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == want) ok=1 }
      END { if (!found) flush() }
    ' "$f")
    if [ -n "$uri" ]; then echo "${uri%/}"; return 0; fi
  done
  # one-line format fallback: deb [opts] URI SUITE COMPONENT...
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk -v want="$want" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i+1) == want) { print $i; exit }
      }' "$f")
    if [ -n "$uri" ]; then echo "${uri%/}"; return 0; fi
  done
  return 1
}

# download_deb WORK PACKAGE SUITES...: downloads PACKAGE's .deb from the first of SUITES that
# has it (apt's candidate across them) into WORK/deb, with private apt state in WORK.
download_deb() {
  local work=$1 package=$2 s uri base_uri
  shift 2
  base_uri=$(uri_for_suite bookworm) || die "no apt source with suite 'bookworm' found in /etc/apt"
  rm -rf "$work"
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"

  # private one-line sources list
  local list="$work/sources.list"
  : >"$list"
  for s in "$@"; do
    uri=$base_uri
    if [ "$s" = bookworm-security ]; then
      uri=$(uri_for_suite bookworm-security) || continue
    fi
    echo "deb [signed-by=$KEYRING] $uri $s main" >>"$list"
  done

  local -a apt_opts=(
    -q
    -o "Dir::Etc::SourceList=$list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache"
    -o "Dir::Cache::pkgcache=$work/cache/pkgcache.bin"
    -o "Dir::Cache::srcpkgcache=$work/cache/srcpkgcache.bin"
    -o "APT::Get::List-Cleanup=0"
    -o "Acquire::Check-Valid-Until=false"
    -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::Translations::DefaultEnabled=false"
  )
  # The _apt sandbox user cannot write into a private dir owned by us.
  apt_opts+=(-o "APT::Sandbox::User=$(id -un)")

  log "$package: apt-get update ($*) from $base_uri"
  apt-get "${apt_opts[@]}" update >"$work/update.log" 2>&1 \
    || { cat "$work/update.log" >&2; die "$package: apt-get update failed"; }

  log "$package: apt-get download $package"
  (cd "$work/deb" && apt-get "${apt_opts[@]}" download "$package") >"$work/download.log" 2>&1 \
    || { cat "$work/download.log" >&2; die "$package: apt-get download $package failed"; }
}

# fetch_tool NAME: a registry tool (a static Go binary) into TOOLS_ROOT/NAME.
fetch_tool() {
  local name=$1 package suite pattern
  case "$name" in
    cosign-2) package=cosign; suite=trixie; pattern='^v?2\.' ;;
    cosign-3) package=cosign; suite=sid;    pattern='^v?3\.' ;;
    oras)     package=oras;   suite=sid;    pattern='^1\.' ;;
    *) die "unknown name '$name'" ;;
  esac
  local dest="$TOOLS_ROOT/$name"
  if [ -f "$dest/.complete" ] && [ -x "$dest/usr/bin/$package" ]; then
    log "$name: cached ($(cat "$dest/.complete"))"
    echo "$name=$dest"
    return 0
  fi
  local work="$TOOLS_ROOT/.work-$name"
  download_deb "$work" "$package" "$suite"
  local -a debs
  shopt -s nullglob
  debs=("$work"/deb/"$package"_*.deb)
  [ ${#debs[@]} -ge 1 ] || die "$name: no .deb downloaded"
  local version
  version=$(dpkg-deb -f "${debs[0]}" Version)
  grep -Eq "$pattern" <<<"$version" || die "$name: $suite carries $package $version"
  local stage="$work/root"
  mkdir -p "$stage"
  dpkg -x "${debs[0]}" "$stage"
  [ -x "$stage/usr/bin/$package" ] || die "$name: ${debs[0]} has no usr/bin/$package"
  rm -rf "$dest"
  mkdir -p "$TOOLS_ROOT"
  mv "$stage" "$dest"
  echo "$version $(basename "${debs[0]}")" >"$dest/.complete"
  rm -rf "$work"
  log "$name: $package $version ready in $dest"
  echo "$name=$dest"
}

# fetch_one VERSION
fetch_one() {
  local ver=$1 suites pattern
  case "$ver" in
    2.1) suites="sid";      pattern='^2\.' ;;
    1.7) suites="trixie";   pattern='^1\.7$' ;;
    1.6) suites="bookworm bookworm-updates bookworm-security"; pattern='^1\.6$' ;;
    cosign-*|oras) fetch_tool "$ver"; return ;;
    *) die "unknown name '$ver' (known: 2.1, 1.7, 1.6, cosign-2, cosign-3, oras)" ;;
  esac

  local dest="$CACHE_ROOT/$ver"
  if [ -f "$dest/.complete" ] && [ -x "$dest/usr/bin/containerd" ] && [ -x "$dest/usr/bin/ctr" ]; then
    log "$ver: cached ($(cat "$dest/.complete"))"
    echo "$ver=$dest"
    return 0
  fi

  local work="$CACHE_ROOT/.work-$ver"
  # shellcheck disable=SC2086 # the suites are words
  download_deb "$work" containerd $suites

  local -a debs
  shopt -s nullglob
  debs=("$work"/deb/containerd_*.deb)
  [ ${#debs[@]} -ge 1 ] || die "$ver: no .deb downloaded"
  local deb=${debs[0]}

  local stage="$work/root"
  mkdir -p "$stage"
  dpkg -x "$deb" "$stage"
  [ -x "$stage/usr/bin/containerd" ] || die "$ver: $deb has no usr/bin/containerd"
  [ -x "$stage/usr/bin/ctr" ] || die "$ver: $deb has no usr/bin/ctr"

  # e.g. "containerd github.com/containerd/containerd/v2 2.1.9+ds1 "
  local vline upstream mm
  vline=$("$stage/usr/bin/containerd" --version)
  upstream=$(awk '{print $3}' <<<"$vline")
  upstream=${upstream#v}
  mm=$(sed -E 's/^([0-9]+)\.([0-9]+).*/\1.\2/' <<<"$upstream")
  if ! grep -Eq "$pattern" <<<"$mm"; then
    die "$ver: downloaded containerd is $upstream ($(basename "$deb")), expected $ver"
  fi
  if [ "$mm" != "$ver" ]; then
    log "$ver: NOTE: suite '$suites' now carries containerd $upstream (not $ver); accepting it"
  fi

  rm -rf "$dest"
  mv "$stage" "$dest"
  echo "$upstream $(basename "$deb")" >"$dest/.complete"
  rm -rf "$work"
  log "$ver: containerd $upstream ready in $dest"
  echo "$ver=$dest"
}

mkdir -p "$CACHE_ROOT"
# serialise concurrent callers
exec 9>"$CACHE_ROOT/.lock"
flock 9

results=()
for v in "$@"; do
  results+=("$(fetch_one "$v")")
done
printf '%s\n' "${results[@]}"
