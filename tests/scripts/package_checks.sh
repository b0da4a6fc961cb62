# Check helpers sourced by package_test.sh and package_install_test.sh: each check prints
# "ok"/"FAIL" and a description; checks_done reports and sets the exit status.
failures=0
pass() { echo "ok   $*"; }
fail() {
  echo "FAIL $*"
  failures=$((failures + 1))
}
check() {  # check DESCRIPTION CMD...: passes when CMD succeeds (its output shown on failure)
  local what=$1 out line
  shift
  if out=$("$@" 2>&1); then pass "$what"; else
    fail "$what"
    [[ -n "$out" ]] && while IFS= read -r line; do echo "    | $line"; done <<<"$out"
  fi
}
has_line() { grep -qxF -- "$2" <<<"$1"; }  # has_line TEXT LINE
checks_done() {
  echo
  if ((failures)); then
    echo "$failures check(s) failed"
    return 1
  fi
  echo "all checks passed ($SECONDS s)"
}
