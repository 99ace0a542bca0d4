#!/usr/bin/env bash
# The path a user takes with krew, tested: the release archive is
# reproducible (two builds, one sha256), its manifest passes krew's own
# validation in `kubectl krew install --manifest --archive` into a temporary
# KREW_ROOT, the installed plugin runs through kubectl, and uninstall removes
# it. krew itself comes from the Go module proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
GO=${GO:-go}
version=v0.0.0-krewtest
platform=linux/$($GO env GOARCH)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

krew=.cz/bin/kubectl-krew
if [ ! -x "$krew" ]; then
	mkdir -p .cz/bin
	GOBIN="$tmp/gobin" $GO install sigs.k8s.io/krew/cmd/krew@v0.4.3
	cp "$tmp/gobin/krew" "$krew"
fi

dist="$tmp/dist"
archive=$dist/kubectl-cz_${version}_${platform%/*}_${platform#*/}.tar.gz
make -s dist VERSION=$version PLATFORMS=$platform DIST="$dist" >/dev/null
first=$(sha256sum "$archive" | cut -d' ' -f1)
make -s dist VERSION=$version PLATFORMS=$platform DIST="$dist" >/dev/null
second=$(sha256sum "$archive" | cut -d' ' -f1)
if [ "$first" != "$second" ]; then
	echo "krew test: the archive is not reproducible: $first then $second" >&2
	exit 1
fi
listing=$(tar -tzf "$archive")
for f in kubectl-cz README.md LICENSE; do
	grep -qx "$f" <<<"$listing" || { echo "krew test: the archive lacks $f: $listing" >&2; exit 1; }
done
$GO run ./hack/krewgen -version $version -dist "$dist" -base-url https://example.invalid/releases/$version > "$tmp/cz.yaml"

export KREW_ROOT="$tmp/krew" HOME="$tmp/home"
mkdir -p "$HOME" "$tmp/bin" "$KREW_ROOT/index/default/plugins"
# krew's commands want a cloned index; an empty local one keeps the test
# off the network (the manifest and archive are given).
git init -q "$KREW_ROOT/index/default"
cp "$krew" "$tmp/bin/kubectl-krew"
kubectl=$(command -v kubectl || echo "$PWD/.cz/bin/kubectl")
export PATH="$KREW_ROOT/bin:$tmp/bin:$PATH"
"$kubectl" krew install --manifest="$tmp/cz.yaml" --archive="$archive" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; exit 1; }
out=$("$kubectl" cz version --client 2>&1) || { echo "krew test: the installed plugin: $out" >&2; exit 1; }
case "$out" in *"$version"*) ;; *) echo "krew test: kubectl cz version says: $out" >&2; exit 1 ;; esac
# The plugin names the agent image the release publishes, by its digest.
digest=$(tar -xOf "$dist/cz-agent_${version}_oci.tar" index.json | grep -o 'sha256:[0-9a-f]\{64\}' | head -1)
case "$out" in *"Agent Image: ghcr.io/kubectl-cz/cz-agent:$version@$digest"*) ;; *)
	echo "krew test: the installed plugin's agent image is not the release's ($digest): $out" >&2; exit 1 ;; esac
"$kubectl" krew uninstall cz >"$tmp/uninstall.log" 2>&1 || { cat "$tmp/uninstall.log" >&2; exit 1; }
if [ -e "$KREW_ROOT/bin/kubectl-cz" ]; then
	echo "krew test: kubectl-cz is still installed after uninstall" >&2
	exit 1
fi
echo "krew test: $(basename "$archive") reproducible ($first), installed by krew, ran '$out', uninstalled"
