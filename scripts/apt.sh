# Sourced by the scripts that install Debian packages where missing: apt_install PKG…, using
# the caller's say/die (so messages carry the caller's name).
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
    [[ $(id -u) == 0 ]] || die "installing $* needs root: run 'sudo apt-get install -y $*'"
    say "installing Debian packages: $* (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 || die "apt-get update failed: check the network/apt sources"
        apt-get install -y -q --no-install-recommends "$@" >/dev/null ||
            die "apt-get install $* failed: run it by hand to see why"
    fi
}
