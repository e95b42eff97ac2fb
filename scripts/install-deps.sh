#!/bin/sh
# Installs the system packages that mqbridge's tests, demo and benchmarks use. Idempotent:
# packages already installed are not touched, and apt-get runs only when something is missing.
#
#   mosquitto, mosquitto-clients  the real broker and real clients the tests run against
#   libmosquitto-dev, pkg-config  the C client library behind the benchmark's load generator
#   openssl                       certificate inspection in tests
#   python3, python3-paho-mqtt    scripted real MQTT clients (paho)
#   python3-yaml                  compose/run-without-docker.py reads the compose files
#   stunnel4                      the TLS baseline in benchmarks
#   haproxy                       the plain TCP proxy baseline in the proxy benchmark
#   iproute2, tcpdump             two-site tests in network namespaces, and their captures
#   systemd, procps               systemd-analyze and /bin/kill: the shipped unit (conf/mqbridge.service) is verified
set -eu

PACKAGES="mosquitto mosquitto-clients libmosquitto-dev pkg-config openssl python3 python3-paho-mqtt python3-yaml stunnel4 haproxy iproute2 tcpdump systemd procps"

missing=""
for package in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $package"
    fi
done

if [ -n "$missing" ]; then
    echo "install-deps: installing$missing"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# The python3 first on PATH may not be Debian's (pyenv, venv); make sure it can import paho
# and yaml.
for module in paho.mqtt:paho-mqtt yaml:pyyaml; do
    if ! python3 -c "import ${module%%:*}" 2>/dev/null; then
        echo "install-deps: installing ${module#*:} for $(command -v python3)"
        python3 -m pip install --quiet "${module#*:}" 2>/dev/null || python3 -m pip install --quiet --break-system-packages "${module#*:}"
    fi
done
