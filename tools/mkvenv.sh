#!/usr/bin/env bash
# Make (or refresh) the project's virtual environment and install the
# package into it, editable, with the given extras.  Never installs into the
# interpreter it starts from: Debian 12 / Ubuntu 23.04+ / Fedora 38+ mark the
# system python3 "externally managed" (PEP 668) and pip refuses to touch it.
#
#   tools/mkvenv.sh PYTHON VENV [EXTRAS]      e.g. tools/mkvenv.sh /usr/bin/python3 .venv ovs,libvirt,test
#
# The venv is remade when PYTHON changed since it was made; pip runs only when
# pyproject.toml, setup.py or the extras changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

py=${1:?usage: tools/mkvenv.sh PYTHON VENV [EXTRAS]}
venv=${2:?usage: tools/mkvenv.sh PYTHON VENV [EXTRAS]}
extras=${3:-}

if ! command -v "$py" >/dev/null 2>&1; then
  echo "mkvenv: no interpreter '$py' (set PYTHON=/path/to/python3)" >&2
  exit 2
fi
py_real=$(command -v "$py")
py_real=$(readlink -f "$py_real")

if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.qos-hooks-made-from" 2>/dev/null)" != "$py_real" ]; then
  echo "mkvenv: $venv was made from another interpreter; remaking it from $py_real" >&2
  rm -rf "$venv"
fi

if [ ! -x "$venv/bin/python" ]; then
  if ! err=$("$py" -m venv "$venv" 2>&1); then
    rm -rf "$venv"
    # Debian and Ubuntu ship ensurepip (and so venv's pip) in python3-venv.
    if printf '%s' "$err" | grep -qi 'ensurepip' && command -v apt-get >/dev/null 2>&1; then
      ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
      if [ "$(id -u)" != 0 ]; then
        echo "mkvenv: $py cannot make a virtual environment: install python3-venv (python$ver-venv) as root, then run make again" >&2
        exit 2
      fi
      echo "mkvenv: installing python3-venv (python$ver-venv) so $py can make $venv" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "python$ver-venv" >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "python$ver-venv" >/dev/null; }
      "$py" -m venv "$venv"
    else
      printf 'mkvenv: %s -m venv %s failed:\n%s\n' "$py" "$venv" "$err" >&2
      exit 2
    fi
  fi
  printf '%s\n' "$py_real" > "$venv/.qos-hooks-made-from"
  echo "mkvenv: made $venv from $py_real" >&2
fi

# pip only when the metadata changed or an extra is asked for that is not in yet
sum=$(cat pyproject.toml setup.py | cksum)
read -r have_sum have_extras 2>/dev/null < "$venv/.qos-hooks-installed" || { have_sum=; have_extras=; }
need=0
[ "$have_sum" = "${sum// /_}" ] || need=1
for e in ${extras//,/ }; do
  case ",$have_extras," in *",$e,"*) ;; *) need=1 ;; esac
done
if [ "$need" = 1 ]; then
  all=$(printf '%s\n' ${extras//,/ } ${have_extras//,/ } | sort -u | paste -sd, -)
  spec=.
  [ -z "$all" ] || spec=".[$all]"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" >&2
  printf '%s %s\n' "${sum// /_}" "$all" > "$venv/.qos-hooks-installed"
fi
