#!/usr/bin/env bash
# All set-up, idempotent, for a fresh Debian 12 or 13 machine as root: the Debian packages the lab
# needs (only those missing; no daemon is started by apt), then the venv at .venv made from Debian's
# /usr/bin/python3 with kolabmon and its test tools installed (only when pyproject.toml changed).
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t packages < <(grep -v '^\s*#' lab/packages.txt | grep -v '^\s*$')
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  debconf-set-selections <<'PRESEED'
postfix postfix/main_mailer_type select Local only
postfix postfix/mailname string lab.example.org
slapd slapd/no_configuration boolean true
PRESEED
  # keep apt's maintainer scripts from starting the stock daemons on the standard ports
  policy_added=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    policy_added=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=900 "${missing[@]}" >&2
  if [ -n "$policy_added" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# Cyrus's imapd without the cyrus-imapd package (it would remove dovecot-imapd): the .deb of the
# installed cyrus-common's version, unpacked once into its own directory; lab/cyrus.py runs it
# through the version-free link
cyrus_lab=/usr/local/lib/kolabmon-lab
cyrus_version=$(dpkg-query -W -f='${Version}' cyrus-common)
if [ ! -x "$cyrus_lab/cyrus-imapd-$cyrus_version/usr/lib/cyrus/bin/imapd" ]; then
  echo "setup: unpacking the imapd of cyrus-imapd $cyrus_version" >&2
  scratch=$(mktemp -d) && chmod 755 "$scratch"  # apt downloads as _apt
  (cd "$scratch" && apt-get download -q "cyrus-imapd=$cyrus_version" >&2)
  mkdir -p "$cyrus_lab"
  dpkg-deb -x "$scratch"/cyrus-imapd_*.deb "$cyrus_lab/cyrus-imapd-$cyrus_version"
  rm -rf "$scratch"
fi
ln -sfn "cyrus-imapd-$cyrus_version" "$cyrus_lab/cyrus-imapd"

# Postfix asks saslauthd through its socket, which only group sasl may reach (Debian's own advice:
# adduser postfix sasl); Cyrus's user is in that group from its package
id -nG postfix | tr ' ' '\n' | grep -qx sasl || usermod -a -G sasl postfix

stamp=.venv/.kolabmon-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: building .venv from /usr/bin/python3" >&2
  /usr/bin/python3 -m venv .venv
  # compat mode: a plain path entry, no import hook that every plugin start would pay for
  .venv/bin/pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[test]' >&2
  echo "$want" > "$stamp"
fi
