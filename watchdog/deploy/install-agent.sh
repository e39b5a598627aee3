#!/usr/bin/env bash
# Install (or upgrade) the idle-watchdog agent on this machine, as root.
#
#   deploy/install-agent.sh [--source SPEC] [--prefix DIR] [--config-dir DIR]
#       [--unit-dir DIR] [--unit FILE] [--idle-minutes N] [--python PY] [--no-start]
#
# Steps, one output line each:
#   1. a virtual environment at PREFIX (default /opt/idle-watchdog), created if
#      missing. Its own venv, always: PyPI's filesystem library `watchdog` has
#      the same import name as idle-watchdog's package.
#   2. `pip install --upgrade SOURCE` into it (SOURCE: anything pip accepts;
#      default `idle-watchdog` from PyPI), then a check that `import watchdog`
#      is idle-watchdog.
#   3. CONFIG_DIR/config.toml (default /etc/idle-watchdog), only if absent.
#   4. CONFIG_DIR/token, 32 random bytes as hex, mode 0600, only if absent.
#   5. UNIT_DIR/idle-watchdog-agent.service (default /etc/systemd/system), from
#      the idle-watchdog-agent.service beside this script, or the repository's
#      systemd/idle-watchdog-agent.service (or --unit FILE)
#      with ExecStart= pointing at PREFIX and CONFIG_DIR.
#   6. systemctl daemon-reload, enable --now (restart if something changed),
#      unless --no-start, no systemctl, or not booted with systemd.
#
# Idempotent: a second run keeps config.toml and the token byte for byte,
# leaves an identical unit alone and does not restart an unchanged agent.
set -euo pipefail
# Whatever the caller's umask: systemd runs the venv as root, so nothing in it
# (nor the config or the unit) may be writable by anyone else.
umask 022

readonly UNIT_NAME=idle-watchdog-agent.service
readonly DEFAULT_PREFIX=/opt/idle-watchdog
readonly DEFAULT_CONFIG_DIR=/etc/idle-watchdog

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
source_spec=idle-watchdog
prefix=$DEFAULT_PREFIX
config_dir=$DEFAULT_CONFIG_DIR
unit_dir=/etc/systemd/system
# Beside the script in the package (watchdog/deploy/), or systemd/ in a checkout.
unit_src=$script_dir/$UNIT_NAME
[[ -f $unit_src ]] || unit_src=$script_dir/../systemd/$UNIT_NAME
idle_minutes=30
idle_given=
python=python3
start=1

say() { printf 'install-agent: %s\n' "$*"; }
die() {
    printf 'install-agent: error: %s\n' "$*" >&2
    exit 1
}
usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

# --opt VALUE and --opt=VALUE both work.
while (($#)); do
    opt=$1
    value=
    case $opt in
        --*=*)
            value=${opt#*=}
            opt=${opt%%=*}
            ;;
        --source | --prefix | --config-dir | --unit-dir | --unit | --idle-minutes | --python)
            (($# >= 2)) || die "$opt needs a value"
            value=$2
            shift
            ;;
    esac
    case $opt in
        --source) source_spec=$value ;;
        --prefix) prefix=$value ;;
        --config-dir) config_dir=$value ;;
        --unit-dir) unit_dir=$value ;;
        --unit) unit_src=$value ;;
        --idle-minutes)
            idle_minutes=$value
            idle_given=1
            ;;
        --python) python=$value ;;
        --no-start) start=0 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown option: $opt (see --help)" ;;
    esac
    shift
done

# Paths end up in a unit file (where %, $, \ and quotes are special) and in a
# TOML string: refuse anything but plain characters instead of escaping.
absolute() {
    local name=$1 path=$2
    [[ -n $path ]] || die "$name is empty"
    [[ $path == /* ]] || path=$PWD/$path
    [[ $path =~ ^[A-Za-z0-9_./+:@,=-]+$ ]] ||
        die "$name '$path' contains characters other than letters, digits and _./+:@,=-"
    while [[ $path == */ && $path != / ]]; do path=${path%/}; done
    printf '%s' "$path"
}
prefix=$(absolute --prefix "$prefix")
config_dir=$(absolute --config-dir "$config_dir")
unit_dir=$(absolute --unit-dir "$unit_dir")
[[ -n $source_spec ]] || die "--source is empty"
if [[ ! $idle_minutes =~ ^[0-9]{1,5}$ ]] || ((10#$idle_minutes < 1 || 10#$idle_minutes > 10080)); then
    die "--idle-minutes must be a whole number of minutes from 1 to 10080, not '$idle_minutes'"
fi
idle_minutes=$((10#$idle_minutes))
[[ -f $unit_src ]] || die "unit file not found: $unit_src (pass --unit FILE)"

venv_python=$prefix/bin/python
program=$prefix/bin/idle-watchdog
config=$config_dir/config.toml
token=$config_dir/token
unit=$unit_dir/$UNIT_NAME
changed=0 # the package or the unit changed: restart a running agent

# 1. The virtual environment.
if [[ -x $venv_python ]]; then
    say "venv: $prefix exists, kept"
else
    command -v "$python" >/dev/null 2>&1 || die "$python not found (pass --python PY)"
    "$python" -m venv "$prefix" ||
        die "'$python -m venv $prefix' failed; on Debian/Ubuntu install python3-venv first"
    say "venv: created $prefix with $("$venv_python" -V 2>&1)"
fi

# 2. The package, and the check that it is ours.
# What is installed: the version, and a digest of the file list with hashes
# (a rebuilt checkout keeps its version number but not its RECORD).
installed() {
    "$venv_python" -I - <<'EOF' 2>/dev/null || true
import hashlib
from importlib import metadata
dist = metadata.distribution("idle-watchdog")
record = dist.read_text("RECORD") or ""
print(dist.version, hashlib.sha256(record.encode()).hexdigest()[:12])
EOF
}
before=$(installed)
"$venv_python" -I -m pip install --quiet --disable-pip-version-check --upgrade "$source_spec" ||
    die "pip install $source_spec into $prefix failed"
if ! "$venv_python" -I -c 'import watchdog; assert watchdog.IDLE_WATCHDOG' 2>/dev/null; then
    die "in $prefix, 'import watchdog' is not idle-watchdog: PyPI's filesystem library" \
        "'watchdog' shares the import name. Remove it ($venv_python -m pip uninstall watchdog)" \
        "or use a fresh --prefix, then run this again."
fi
[[ -x $program ]] || die "$program is missing after pip install $source_spec"
version=$("$program" --version 2>&1) || die "$program --version failed: $version"
after=$(installed)
if [[ $before == "$after" ]]; then
    say "package: $version from $source_spec, unchanged ($after)"
else
    changed=1
    say "package: $version from $source_spec, installed (${before:-nothing} -> $after)"
fi

# Files below are written to a temporary name in the same directory, then
# renamed: an interrupted run never leaves half a config or token behind.
mkdir -p "$config_dir"

# 3. The config file, never overwritten.
if [[ -e $config ]]; then
    say "config: $config exists, kept${idle_given:+ (--idle-minutes not applied)}"
else
    tmp=$(mktemp "$config.XXXXXX")
    {
        cat <<EOF
# idle-watchdog agent configuration, written once by install-agent.sh (a
# re-install never overwrites it). Every key, with its default and meaning,
# is in config.example.toml in the idle-watchdog sources. After an edit:
#   $program config check $config
#   systemctl restart $UNIT_NAME

[idle]
# Minutes without activity before the scheduler stops this instance (the
# instance tag idle-watchdog:idle-minutes overrides it).
minutes = $idle_minutes
EOF
        # The warning lead time (default 10) may not exceed the threshold.
        ((idle_minutes >= 10)) || echo "warn_minutes = $idle_minutes"
        cat <<EOF

[agent]
# What counts as activity on this instance (GPU, Jupyter, terminals,
# processes, network and disk thresholds), the HTTP endpoint, and the
# backstop: the agent stops this instance itself after backstop_minutes
# idle (default 120) when the desktop scheduler did not.
token_file = "$token"
EOF
        # The backstop must stay well above the scheduler's threshold.
        ((2 * idle_minutes <= 120)) || echo "backstop_minutes = $((2 * idle_minutes))"
    } >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$config"
    say "config: wrote $config (idle minutes = $idle_minutes)"
fi

# 4. The HTTP endpoint's bearer token, never overwritten.
if [[ -e $token ]]; then
    say "token: $token exists, kept"
else
    tmp=$(umask 077 && mktemp "$token.XXXXXX")
    "$venv_python" -I -c 'import secrets; print(secrets.token_hex(32))' >"$tmp"
    chmod 0600 "$tmp"
    mv -f "$tmp" "$token"
    say "token: wrote $token (mode 0600)"
fi
# Only root may read it, whoever created it.
if (($(id -u) == 0)); then
    chown 0:0 "$token"
fi
if [[ $(stat -c %a "$token") != 600 ]]; then
    chmod 0600 "$token"
    say "token: reset $token to mode 0600"
fi

# 5. The unit. ConfigurationDirectory= names a directory under /etc; for a
# config directory elsewhere the line is dropped (ProtectSystem=strict keeps
# every path readable anyway, except the host's /tmp).
case $config_dir in
    /etc/?*) config_directory=ConfigurationDirectory=${config_dir#/etc/} ;;
    *) config_directory="# ConfigurationDirectory= dropped: $config_dir is not under /etc" ;;
esac
mkdir -p "$unit_dir"
tmp=$(mktemp "$unit.XXXXXX")
awk -v exec_start="ExecStart=$program agent --config $config" -v config_directory="$config_directory" '
    /^ExecStart=/ { print exec_start; next }
    /^ConfigurationDirectory=/ { print config_directory; next }
    { print }
' "$unit_src" >"$tmp"
grep -qx "ExecStart=$program agent --config $config" "$tmp" ||
    die "$unit_src has no ExecStart= line to rewrite"
chmod 0644 "$tmp"
if [[ -f $unit ]] && cmp -s "$tmp" "$unit"; then
    rm -f "$tmp"
    say "unit: $unit unchanged"
else
    mv -f "$tmp" "$unit"
    changed=1
    say "unit: installed $unit (ExecStart=$program)"
fi

# 6. Start it, where systemd runs this machine.
if ((!start)); then
    say "systemd: not started (--no-start)"
elif ! command -v systemctl >/dev/null 2>&1; then
    say "systemd: not started (no systemctl)"
elif [[ ! -d /run/systemd/system ]]; then
    say "systemd: not started (not booted with systemd)"
else
    systemctl daemon-reload
    if ((changed)) && systemctl is-active --quiet "$UNIT_NAME"; then
        systemctl enable --quiet "$UNIT_NAME"
        systemctl restart "$UNIT_NAME"
        say "systemd: enabled and restarted $UNIT_NAME"
    else
        systemctl enable --quiet --now "$UNIT_NAME"
        say "systemd: enabled and started $UNIT_NAME"
    fi
fi
