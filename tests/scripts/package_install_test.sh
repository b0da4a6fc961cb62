#!/usr/bin/env bash
# The Debian package installed for real on this Debian 12 host (root; changes the system,
# and leaves it as it was): `apt-get install ./sepal_*.deb` pulls the runtime dependencies,
# installs the files and creates the sepal user; the config passes --check (also as sepal),
# the unit passes `systemd-analyze verify` and is left disabled; a reinstall keeps a locally
# edited conffile; postinst's useradd fallback (no systemd-sysusers, as in a container) makes
# the same user; `apt-get remove` keeps only the conffile, `apt-get purge` removes it, the
# log directory and the enablement symlink. Debian keeps system users on purge: the test
# then deletes the sepal user itself (unless it existed before). Works without systemd as
# PID 1 (the maintainer scripts then skip systemctl).
#
# Usage: package_install_test.sh [sepal_VERSION_ARCH.deb]   (default: scripts/package-deb.sh
#        builds one with the release preset). Exit 77: not root or not a dpkg system.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=SCRIPTDIR/package_checks.sh
source "$here/package_checks.sh"

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "skip: needs root and apt-get (it installs and purges the sepal package)"
  exit 77
fi
if dpkg-query -W -f='${Status}' sepal 2>/dev/null | grep -qv 'not-installed'; then
  echo "refusing: the sepal package is already on this host (dpkg -l sepal); purge it first"
  exit 1
fi
user_before=no
getent passwd sepal >/dev/null && user_before=yes

deb=${1:-}
if [[ -z "$deb" ]]; then
  deb=$("$here/../../scripts/package-deb.sh" | tail -n 1) || {
    echo "FAIL scripts/package-deb.sh"
    exit 1
  }
fi
deb=$(realpath "$deb")
T=$(mktemp -d /tmp/sepal-install-test.XXXXXX)
# apt reads local packages as the _apt user where it can: a world-readable copy.
cp "$deb" "$T/" && chmod 0755 "$T" && chmod 0644 "$T/$(basename "$deb")"
deb=$T/$(basename "$deb")

cleanup() {
  if dpkg-query -W -f='${Status}' sepal 2>/dev/null | grep -qv 'not-installed'; then
    echo "cleanup: purging the sepal package"
    apt-get purge -y -qq sepal >/dev/null 2>&1
  fi
  if [[ $user_before == no ]] && getent passwd sepal >/dev/null; then
    echo "cleanup: deleting the sepal user"
    userdel sepal
  fi
  rm -rf "$T"
}
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
status() { dpkg-query -W -f='${Status}' sepal 2>/dev/null; }
unit=/usr/lib/systemd/system/sepal.service
conf=/etc/sepal/sepal.yaml

# ---- install -------------------------------------------------------------------------------

echo "== apt-get install $deb"
check "apt-get install ./$(basename "$deb")" apt-get install -y -q "$deb"
check "dpkg: install ok installed" test "$(status)" == "install ok installed"
check "installed version is the package's" test "$(dpkg-query -W -f='${Version}' sepal)" == \
  "$(dpkg-deb -f "$deb" Version)"
for pkg in $(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/^ *//; s/[ (].*//'); do
  check "dependency $pkg installed" bash -c \
    "dpkg-query -W -f='\${Status}' '$pkg' | grep -q 'install ok installed'"
done
for f in /usr/bin/sepal "$unit" /usr/lib/sysusers.d/sepal.conf "$conf" \
  /usr/share/doc/sepal/README.md /usr/share/doc/sepal/copyright; do
  check "$f installed" test -e "$f"
done
check "every library resolves (ldd)" bash -c "! ldd /usr/bin/sepal | grep -q 'not found'"
check "sepal --version" /usr/bin/sepal --version
pw=$(getent passwd sepal)
check "user sepal exists: $pw" test -n "$pw"
check "sepal is a system user (uid < 1000)" test "$(cut -d: -f3 <<<"$pw")" -lt 1000
check "sepal's shell is nologin" test "$(cut -d: -f7 <<<"$pw")" == /usr/sbin/nologin
check "group sepal exists, the user's primary group" test "$(getent group sepal | cut -d: -f3)" == \
  "$(cut -d: -f4 <<<"$pw")"
check "config passes --check" /usr/bin/sepal --config "$conf" --check
check "config passes --check as the sepal user" runuser -u sepal -- /usr/bin/sepal --config \
  "$conf" --check
if command -v systemd-analyze >/dev/null; then
  check "installed unit passes systemd-analyze verify" systemd-analyze verify "$unit"
else
  echo "skip systemd-analyze verify: not installed (apt-get install systemd)"
fi
if command -v systemctl >/dev/null; then
  check "unit is installed disabled" test "$(systemctl is-enabled sepal.service 2>&1)" == disabled
fi

# ---- reinstall (postinst configure with the old version) keeps a local edit ---------------------

echo "# local edit" >>"$conf"
check "apt-get install --reinstall" apt-get install -y -q --reinstall "$deb"
check "the edited conffile is kept" grep -qx '# local edit' "$conf"
check "still installed" test "$(status)" == "install ok installed"

# ---- postinst without systemd-sysusers (a container without systemd) ------------------------

userdel sepal
mkdir -p "$T/bin"
for tool in getent useradd; do ln -s "$(command -v "$tool")" "$T/bin/$tool"; done
check "postinst configure with only getent and useradd on PATH" \
  env PATH="$T/bin" /var/lib/dpkg/info/sepal.postinst configure
pw=$(getent passwd sepal)
check "useradd made user sepal: $pw" grep -q '^sepal:x:[0-9]*:[0-9]*:sepal gRPC proxy:/nonexistent:/usr/sbin/nologin$' \
  <<<"$pw"
check "and group sepal" test "$(getent group sepal | cut -d: -f3)" == "$(cut -d: -f4 <<<"$pw")"
check "no home directory made" test ! -e /nonexistent

# ---- remove, purge ---------------------------------------------------------------------------

# What running it would leave: an enablement symlink and a log directory.
if command -v systemctl >/dev/null; then
  check "systemctl enable sepal (offline)" systemctl enable sepal.service
  check "enablement symlink made" test -L /etc/systemd/system/multi-user.target.wants/sepal.service
fi
mkdir -p /var/log/sepal && echo '{}' >/var/log/sepal/access.log && chown -R sepal:sepal /var/log/sepal

echo "== apt-get remove sepal"
check "apt-get remove sepal" apt-get remove -y -q sepal
check "dpkg: deinstall ok config-files" test "$(status)" == "deinstall ok config-files"
for f in /usr/bin/sepal "$unit" /usr/lib/sysusers.d/sepal.conf /usr/share/doc/sepal; do
  check "$f removed" test ! -e "$f"
done
check "conffile kept on remove" test -f "$conf"
check "user kept on remove" getent passwd sepal

echo "== apt-get purge sepal"
check "apt-get purge sepal" apt-get purge -y -q sepal
check "dpkg: sepal not installed" bash -c \
  "! dpkg-query -W -f='\${Status}' sepal 2>/dev/null | grep -qv not-installed"
check "/etc/sepal removed" test ! -e /etc/sepal
check "/var/log/sepal removed" test ! -e /var/log/sepal
check "enablement symlink removed" test ! -L /etc/systemd/system/multi-user.target.wants/sepal.service
check "user kept on purge (Debian policy for system users)" getent passwd sepal
if [[ $user_before == no ]]; then
  userdel sepal
  check "userdel sepal removed the user and its group" bash -c \
    "! getent passwd sepal && ! getent group sepal"
fi

checks_done
