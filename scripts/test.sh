#!/usr/bin/env bash
# One command for the whole test suite on a fresh machine (run as root: the tests start a real
# OpenSSH sshd that authenticates its own system accounts). Installs openssh-server, ProFTPD with
# mod_sftp (the second SFTP server) and rclone (the benchmarks' reference peer) when missing, the
# Python packages into .venv, then runs ruff and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v rclone >/dev/null 2>&1 || missing+=(rclone)
command -v pgrep >/dev/null 2>&1 || missing+=(procps)          # the tests check no process outlives them
command -v useradd >/dev/null 2>&1 || missing+=(passwd)        # the sshd fixture's test accounts
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-dejavu-core)   # the browser test (Playwright drives it)
if [ ! -x /usr/sbin/proftpd ]; then                            # the second SFTP server: ProFTPD mod_sftp
  missing+=(proftpd-core proftpd-mod-crypto)
elif [ ! -f /usr/lib/proftpd/mod_sftp.so ]; then
  missing+=(proftpd-mod-crypto)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [[ " ${missing[*]} " == *" proftpd-core "* ]]; then
    # Debian's postinst enables (and may start) a system proftpd serving FTP on port 21. The tests never
    # use it (their fixture runs its own on a free port with its own config), so switch it off again.
    as_root sh -c 'systemctl disable --now proftpd.service proftpd.socket \
      || { invoke-rc.d proftpd stop; update-rc.d proftpd disable; }' >/dev/null 2>&1 || true
  fi
fi

bash scripts/bootstrap.sh test
bash deploy/ecs/install_lint_tools.sh   # cfn-lint in .venv, checkov in its own .venv-checkov
.venv/bin/ruff check .
started=$(date +%s)
since=$(mktemp)   # what the suite leaves behind is what is newer than this
trap 'rm -f "$since"' EXIT
accounts_before=""
for user in pi_pw pi_key; do
  if id "$user" >/dev/null 2>&1; then accounts_before+=" $user"; fi
done
status=0
if [ "$(id -u)" -eq 0 ]; then
  .venv/bin/python -m pytest "$@" || status=$?
else
  sudo --preserve-env=PATH .venv/bin/python -m pytest "$@" || status=$?
fi
echo "test suite wall time: $(( $(date +%s) - started )) s"
# The fixtures remove what they made: their directories, and (when no other process still holds them,
# see partner_ingest_tests/harness/accounts.py) the test accounts and their password file.
# Directory names carry the PID of the process that made them: one still running (a benchmark beside
# the suite) is not this run's leftover.
leftovers=$(find /tmp -maxdepth 1 -newer "$since" \( -name 'pi-sshd-*' -o -name 'pi-proftpd-*' \) 2>/dev/null \
  | while read -r dir; do
      pid=$(basename "$dir" | cut -d- -f3)
      if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then echo "$dir"; fi
    done | head -5 | xargs || true)
holders=$(find /var/lib/partner-ingest-tests/holders -type f 2>/dev/null | sed 's|.*/||; s|\..*||' \
  | while read -r pid; do if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi; done | xargs || true)
if [ -z "$holders" ]; then
  if [ -d /var/lib/partner-ingest-tests ] && [ /var/lib/partner-ingest-tests -nt "$since" ]; then
    leftovers+=" /var/lib/partner-ingest-tests"
  fi
  for user in pi_pw pi_key; do
    if id "$user" >/dev/null 2>&1 && [[ " $accounts_before " != *" $user "* ]]; then leftovers+=" account $user"; fi
  done
fi
if [ -n "$leftovers" ]; then
  echo "the test suite left these behind (its fixtures should remove them): $leftovers" >&2
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
