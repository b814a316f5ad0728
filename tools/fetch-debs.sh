#!/usr/bin/env bash
# fetch-debs.sh -- run on the DEVELOPMENT machine (Debian, with network and
# the build dependencies installed by tools/setup-deps.sh). Downloads the
# Debian packages that luxtrain builds and links against into .debs/
# (git-ignored), so that tools/gpu-check.sh can unpack them on a GPU machine
# that has nvcc/cmake but no network, no apt, and none of these libraries.
#
# What is fetched: the -dev packages (headers, pkg-config files, .so links)
# of HDF5, cJSON and OpenBLAS, plus every shared library they need at run
# time, found by following DT_NEEDED from the installed libraries here
# (objdump -p) and mapping each library to its package (dpkg -S). glibc,
# libgcc and libstdc++ are left out (every machine has them; a second copy
# would clash with the system's loader). gpu-check.sh later drops any
# library the GPU machine already has.
#
# Usage: tools/fetch-debs.sh            (then carry .debs to the GPU machine)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="$here/.debs"
mkdir -p "$out"
arch="$(dpkg --print-architecture)"
multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
libdir="/usr/lib/$multiarch"

dev_pkgs=(libhdf5-dev libcjson-dev libopenblas-dev libopenblas-pthread-dev)
skip_pkgs=" libc6 libgcc-s1 libstdc++6 "

for p in "${dev_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    { echo "fetch-debs: $p is not installed here (run tools/setup-deps.sh first)" >&2; exit 1; }
done

# the libraries luxtrain links (resolved through the installed .so links)
roots=("$libdir/hdf5/serial/libhdf5.so" "$libdir/libcjson.so" "$libdir/openblas-pthread/libopenblas.so")

ldcache="$(ldconfig -p)"
declare -A seen_lib=() pkgs=()
for p in "${dev_pkgs[@]}"; do pkgs[$p]=1; done
queue=()
for r in "${roots[@]}"; do queue+=("$(readlink -f "$r")"); done
while ((${#queue[@]})); do
  f="${queue[0]}"
  queue=("${queue[@]:1}")
  [[ -n "${seen_lib[$f]:-}" ]] && continue
  seen_lib[$f]=1
  # which package owns it (dpkg records /lib/... or /usr/lib/..., merged-usr or not)
  owner=""
  for cand in "$f" "${f/#\/usr\/lib\//\/lib\/}" "${f/#\/lib\//\/usr\/lib\/}"; do
    owner="$(dpkg -S "$cand" 2>/dev/null | grep -v '^diversion' | head -1 | cut -d: -f1 || true)"
    [[ -n "$owner" ]] && break
  done
  if [[ -z "$owner" ]]; then
    echo "fetch-debs: warning: no package owns $f" >&2
  elif [[ "$skip_pkgs" == *" $owner "* ]]; then
    continue
  else
    pkgs[$owner]=1
  fi
  # follow its DT_NEEDED entries
  while read -r soname; do
    case "$soname" in # glibc / gcc runtime: never shipped
      libc.so.*|libm.so.*|ld-linux*|libpthread.so.*|libdl.so.*|librt.so.*|libresolv.so.*|libgcc_s.so.*|libstdc++.so.*) continue ;;
    esac
    lib="$(awk -v s="$soname" '$1 == s && /x86-64/ && !found {print $NF; found = 1}' <<<"$ldcache")"
    [[ -z "$lib" ]] && { echo "fetch-debs: warning: $soname (needed by $f) not found here" >&2; continue; }
    queue+=("$(readlink -f "$lib")")
  done < <(objdump -p "$f" | awk '$1 == "NEEDED" {print $2}')
done

names=("${!pkgs[@]}")
IFS=$'\n' names=($(sort <<<"${names[*]}")); unset IFS
echo "fetch-debs: ${#names[@]} packages: ${names[*]}"
rm -f "$out"/*.deb
# the versions installed here where the archive still has them (headers
# and libraries then match what CI builds), else the archive's candidate
specs=()
for p in "${names[@]}"; do
  v="$(dpkg-query -W -f='${Version}' "$p:$arch" 2>/dev/null || dpkg-query -W -f='${Version}' "$p")"
  if apt-cache madison "$p" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$v"; then
    specs+=("$p=$v")
  else
    echo "fetch-debs: $p $v is no longer in the archive; taking the candidate version" >&2
    specs+=("$p")
  fi
done
(cd "$out" && apt-get download "${specs[@]}")
printf '%s\n' "${names[@]}" > "$out/PACKAGES"
du -sh "$out" | awk '{print "fetch-debs: " $1 " in .debs/"}'
