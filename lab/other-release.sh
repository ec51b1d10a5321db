#!/usr/bin/env bash
# lab/other-release.sh [CMD [ARG...]] -- run CMD (default: the README's test command, ./lab/test.sh)
# on the *other* supported Debian release than this machine's (12 <-> 13; lab/release.py), in a
# chroot of it, as root. This is how one machine proves both releases (.ci/run).
#
# - The chroot is made with debootstrap (minbase) the first time and cached in
#   $KOLABMON_CHROOT_DIR (default /var/cache/kolabmon-lab/debian-N) with what lab/setup.sh installs
#   there and its venv, so a later run only syncs the project and runs CMD.
# - The project is this working tree (tracked and untracked files git does not ignore), synced to
#   /srv/kolabmon in the chroot; its .venv there is the chroot's own.
# - The chroot runs in a private mount namespace: its /proc, /sys, /dev, /run mounts go with it when
#   CMD ends, and any process the run leaves behind is killed. Its / is a mount point (a bind of the
#   chroot onto itself) because `ip netns exec` and `unshare --propagation` need one. No pid
#   namespace: PIDs are the host's, as on a real machine (the probes' orphan sweeps rely on that).
# - The host's extra trusted CA certificates (/usr/local/share/ca-certificates) and resolv.conf are
#   copied in so that pip works in the chroot wherever it works on the host.
# - What is an artefact of this method and not of the release: the kernel is the host's, and the
#   chroot shares the host's root network namespace (the lab's servers pick free ports anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
project=$PWD

[ -x /usr/bin/python3 ] || { echo "other-release: /usr/bin/python3 is missing: run lab/setup.sh first" >&2; exit 2; }
read -r number suite < <(/usr/bin/python3 lab/release.py --other) || exit 2  # release.py said why
dir=${KOLABMON_CHROOT_DIR:-/var/cache/kolabmon-lab/debian-$number}
stamp=$dir/.kolabmon-bootstrapped
say() { echo "other-release: $*" >&2; }

# the host's Debian mirror (deb822 or one-line sources), for debootstrap and the chroot's apt
mirror=$(grep -hoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* \
  2>/dev/null | grep -v security | head -n 1 | awk '{print $2}' || true)
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}

mkdir -p "$(dirname "$dir")"
exec 9> "$dir.lock"
flock -w 3600 9 || { say "another run holds $dir.lock"; exit 2; }

if [ ! -e "$stamp" ]; then
  command -v debootstrap > /dev/null || {
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2 \
      || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2; }
  }
  say "building a Debian $number ($suite) chroot in $dir from $mirror (cached for later runs)"
  rm -rf "$dir"
  debootstrap --variant=minbase "$suite" "$dir" "$mirror" > "$dir.debootstrap.log" 2>&1 \
    || { tail -n 20 "$dir.debootstrap.log" >&2; say "debootstrap failed (log: $dir.debootstrap.log)"; exit 1; }
  cat > "$dir/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${mirror%/debian}/debian-security $suite-security main
EOF
  touch "$stamp"
fi

# the host's network view and trusted CAs (pip in the chroot goes through the same network)
cp /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
mkdir -p "$dir/usr/local/share/ca-certificates"
cp -a /usr/local/share/ca-certificates/. "$dir/usr/local/share/ca-certificates/" 2>/dev/null || true

# the project: this working tree, without the host's venv and state
dest=$dir/srv/kolabmon
mkdir -p "$dest"
find "$dest" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
if git -C "$project" rev-parse --git-dir > /dev/null 2>&1; then
  git -C "$project" ls-files -z --cached --others --exclude-standard \
    | tar -C "$project" --null --ignore-failed-read -T - -cf - | tar -C "$dest" -xf -
else
  tar -C "$project" --exclude=./.venv --exclude=./var -cf - . | tar -C "$dest" -xf -
fi

[ $# -gt 0 ] || set -- ./lab/test.sh
say "running '$*' on Debian $(cat "$dir/etc/debian_version") ($suite) in $dir"
# inside a private mount namespace (its mounts go with it); afterwards every process still rooted
# in the chroot is one this run left behind: killed by PID (the lab's own teardown comes first)
unshare --mount --propagation private -- /bin/bash -c '
  dir=$1; shift
  set -e
  mount --bind "$dir" "$dir"
  mount -t proc proc "$dir/proc"
  mount --rbind /sys "$dir/sys"
  mount --rbind /dev "$dir/dev"
  mount -t tmpfs -o mode=755 tmpfs "$dir/run"
  mkdir -p "$dir/run/lock"
  set +e
  chroot "$dir" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM="${TERM:-dumb}" CI="${CI:-}" \
    /bin/bash -c "set -e
      apt-get install -y -q --no-install-recommends ca-certificates > /dev/null 2>&1 \
        || { apt-get update -q > /dev/null && apt-get install -y -q --no-install-recommends ca-certificates > /dev/null; }
      update-ca-certificates > /dev/null 2>&1
      cd /srv/kolabmon
      exec \"\$@\"" - "$@"
  rc=$?
  root=$(stat -L -c %d:%i "$dir")
  left=()
  for proc in /proc/[0-9]*; do
    [ "$(stat -L -c %d:%i "$proc/root" 2> /dev/null)" = "$root" ] && left+=("${proc#/proc/}")
  done
  if [ ${#left[@]} -gt 0 ]; then
    echo "other-release: killing ${#left[@]} process(es) the run left in the chroot: ${left[*]}" >&2
    kill -KILL "${left[@]}" 2> /dev/null
  fi
  exit $rc
' - "$dir" "$@"
