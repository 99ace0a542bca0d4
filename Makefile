# kubectl-cz: build, local cluster, demo, tests, benchmarks.
# The two commands a new machine needs: `make demo`, then `make test`.

SHELL := /bin/bash
GO ?= go
PREFIX ?= /usr/local
VERSION ?= v0.1.0-dev
COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null)
KUBE_VERSION := v1.37.2
COREDNS_VERSION := v1.15.0

STATE := .cz
CZBIN := $(STATE)/bin
IMAGES := $(STATE)/images
CLUSTER := $(CZBIN)/cz-cluster
export KUBECONFIG := $(CURDIR)/$(STATE)/cluster/kubeconfig/admin.conf
# The cluster's own kubectl (v1.37.2) comes first, then our plugin.
export PATH := $(CURDIR)/bin:$(CURDIR)/$(CZBIN):$(PATH)

LDFLAGS := -s -w -X github.com/kubectl-cz/kubectl-cz/plugin.Version=$(VERSION) -X github.com/kubectl-cz/kubectl-cz/plugin.GitCommit=$(COMMIT)
KUBE_LDFLAGS := -s -w $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,-X $(p).gitVersion=$(KUBE_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=37)
APT_PACKAGES := etcd-server containerd runc containernetworking-plugins iptables conntrack iproute2 fuse3 busybox-static util-linux git curl graphviz procps
GO_SOURCES := $(shell find . -name '*.go' -not -path './hack/kube/*' -not -path './$(STATE)/*') go.mod go.sum

.PHONY: all build install dist krew deps kube coredns images agent-image cluster-up cluster-down cluster-purge cluster-status \
	laptop-shell demo demo-deploy test test-unit test-e2e bench lint fmt clean

all: build

## build: the plugin binary in bin/
build: bin/kubectl-cz

# The plugin names its agent image by tag and digest: the agent image is
# built first, and its digest goes into the plugin.
PIN = -X github.com/kubectl-cz/kubectl-cz/plugin.AgentDigest=$$(cat $(1))

bin/kubectl-cz: $(GO_SOURCES) $(IMAGES)/cz-agent.tar
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS) $(call PIN,$(IMAGES)/cz-agent.digest)" -o $@ ./cmd/kubectl-cz

## install: put kubectl-cz (and its kubectl completion helper) on PATH ($(PREFIX)/bin)
install: bin/kubectl-cz
	install -m 0755 bin/kubectl-cz $(PREFIX)/bin/kubectl-cz
	install -m 0755 krew/kubectl_complete-cz $(PREFIX)/bin/kubectl_complete-cz
	@echo "installed $(PREFIX)/bin/kubectl-cz: try 'kubectl cz version'"

PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64
RELEASE_URL ?= https://github.com/kubectl-cz/kubectl-cz/releases/download/$(VERSION)

## dist: release archives for every platform in $(DIST) (default dist/), reproducible: same inputs, same sha256;
## and the agent image they name by digest, as an OCI layout archive to publish (crane push, skopeo copy)
DIST ?= dist
dist: $(MKIMAGE)
	@rm -rf $(DIST) && mkdir -p $(DIST)/agent
	@CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $(DIST)/agent/cz-agent ./cmd/cz-agent
	@$(MKIMAGE) -name $(AGENT_IMAGE) -format oci -o $(DIST)/cz-agent_$(VERSION)_oci.tar -digest $(DIST)/agent/digest -entrypoint /cz-agent $(DIST)/agent/cz-agent=/cz-agent
	@echo "$(DIST)/cz-agent_$(VERSION)_oci.tar ($(AGENT_IMAGE)@$$(cat $(DIST)/agent/digest))"
	@for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; d=$(DIST)/$$os-$$arch; mkdir -p $$d; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags "$(LDFLAGS) $(call PIN,$(DIST)/agent/digest)" -o $$d/kubectl-cz ./cmd/kubectl-cz || exit 1; \
		cp README.md LICENSE $$d/; \
		tar -C $$d --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --mode=go-w -cf - kubectl-cz README.md LICENSE \
			| gzip -n -9 > $(DIST)/kubectl-cz_$(VERSION)_$${os}_$${arch}.tar.gz; rm -rf $$d; \
		echo "$(DIST)/kubectl-cz_$(VERSION)_$${os}_$${arch}.tar.gz"; \
	done
	@rm -rf $(DIST)/agent

## test-krew: a reproducible archive installed with krew's own install (KREW_ROOT in a temporary folder)
test-krew:
	hack/krew-test.sh

## krew: the archives and the krew manifest krew/cz.yaml that points at them
krew: dist
	$(GO) run ./hack/krewgen -version $(VERSION) -dist dist -base-url $(RELEASE_URL) > krew/cz.yaml
	@echo "wrote krew/cz.yaml for $(VERSION)"

## deps: Debian packages the local cluster needs (idempotent)
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

## kube: the Kubernetes components as one binary, built from k8s.io/kubernetes (cold: ~12-17 min)
kube: $(CZBIN)/kube

$(CZBIN)/kube: hack/kube/main.go hack/kube/go.mod hack/kube/go.sum
	@mkdir -p $(CZBIN)
	cd hack/kube && CGO_ENABLED=0 $(GO) build -trimpath -tags providerless -ldflags "$(KUBE_LDFLAGS)" -o $(CURDIR)/$@ .
	ln -sf kube $(CZBIN)/kubectl

## coredns: the cluster DNS server (cold: ~5 min)
coredns: $(CZBIN)/coredns

$(CZBIN)/coredns:
	@mkdir -p $(CZBIN)
	GOBIN=$(CURDIR)/$(CZBIN) CGO_ENABLED=0 $(GO) install -trimpath -ldflags "-s -w" github.com/coredns/coredns@$(COREDNS_VERSION)

$(CZBIN)/%: $(GO_SOURCES)
	@mkdir -p $(CZBIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $@ ./$(PKG_$*)

PKG_cz-cluster := hack/cluster
PKG_mkimage := hack/mkimage
PKG_pause := hack/pause
PKG_cz-demo := demo/cz-demo
PKG_cz-agent := cmd/cz-agent

MKIMAGE = $(CZBIN)/mkimage
BUSYBOX_APPLETS := sh tar find nc cat ls stat du mkdir rm cp mv head tail wc dd md5sum sha256sum grep sed awk touch chmod env id true false sleep echo xargs sort uniq seq test [

## images: the container images the cluster runs, as archives in .cz/images
images: $(IMAGES)/pause.tar $(IMAGES)/coredns.tar $(IMAGES)/demo.tar $(IMAGES)/toolbox.tar $(IMAGES)/cz-agent.tar

# The agent image carries the name real users pull (the plugin's default
# --agent-image, by tag and digest); the local cluster gets it by import, as
# no registry is reachable: an OCI archive, whose import keeps the digest.
AGENT_IMAGE := ghcr.io/kubectl-cz/cz-agent:$(VERSION)
$(IMAGES)/cz-agent.tar: $(CZBIN)/cz-agent $(MKIMAGE)
	@mkdir -p $(IMAGES)
	$(MKIMAGE) -name $(AGENT_IMAGE) -format oci -o $@ -oci $(IMAGES)/cz-agent-oci -digest $(IMAGES)/cz-agent.digest \
		-entrypoint /cz-agent $(CZBIN)/cz-agent=/cz-agent

# The agent binary carries the version: a build of another VERSION rebuilds it.
$(CZBIN)/cz-agent: $(STATE)/.version-$(VERSION)
$(STATE)/.version-%:
	@mkdir -p $(STATE) && rm -f $(STATE)/.version-* && touch $@

## agent-image: the agent image as an OCI layout (.cz/images/cz-agent-oci) and its digest, to publish
agent-image: $(IMAGES)/cz-agent.tar
	@echo "$(AGENT_IMAGE)@$$(cat $(IMAGES)/cz-agent.digest)"
	@echo "publish: crane push $(IMAGES)/cz-agent-oci $(AGENT_IMAGE)   (or: skopeo copy oci:$(IMAGES)/cz-agent-oci docker://$(AGENT_IMAGE))"

$(IMAGES)/pause.tar: $(CZBIN)/pause $(MKIMAGE)
	@mkdir -p $(IMAGES)
	$(MKIMAGE) -name kubectl-cz.local/pause:3.10 -o $@ -entrypoint /pause -user 65535:65535 $(CZBIN)/pause=/pause

$(IMAGES)/coredns.tar: $(CZBIN)/coredns $(MKIMAGE)
	@mkdir -p $(IMAGES)
	$(MKIMAGE) -name kubectl-cz.local/coredns:$(COREDNS_VERSION) -o $@ -entrypoint /coredns $(CZBIN)/coredns=/coredns

$(IMAGES)/demo.tar: $(CZBIN)/cz-demo $(MKIMAGE)
	@mkdir -p $(IMAGES)
	$(MKIMAGE) -name kubectl-cz.local/demo:dev -o $@ -entrypoint /cz-demo $(CZBIN)/cz-demo=/cz-demo

# The toolbox has a shell and coreutils (busybox) besides cz-demo: kubectl cp
# and exec need them, and the benchmarks compare against those.
$(IMAGES)/toolbox.tar: $(CZBIN)/cz-demo $(MKIMAGE)
	@mkdir -p $(IMAGES)
	$(MKIMAGE) -name kubectl-cz.local/toolbox:dev -o $@ -entrypoint /bin/cz-demo \
		$(foreach a,$(BUSYBOX_APPLETS),-link /bin/$(a)=busybox) $(CZBIN)/cz-demo=/bin/cz-demo /bin/busybox=/bin/busybox

## cluster-up: start the local cluster (idempotent; warm: seconds)
cluster-up: deps kube images $(CLUSTER)
	$(CLUSTER) up

## cluster-down: stop everything the cluster started and remove its network leftovers (keeps state)
cluster-down: $(CLUSTER)
	$(CLUSTER) down

## cluster-purge: cluster-down, then delete the cluster's state (certificates, etcd data, images)
cluster-purge: $(CLUSTER)
	$(CLUSTER) purge

cluster-status: $(CLUSTER)
	$(CLUSTER) status

## laptop-shell: a shell in the laptop network namespace (reaches only the API server)
laptop-shell: $(CLUSTER) build
	$(CLUSTER) laptop

## demo: everything from a fresh machine: cluster, sample-project graph, one request's path
demo: cluster-up build $(CZBIN)/walkthrough
	$(CLUSTER) demo
	$(CLUSTER) laptop -- $(CZBIN)/walkthrough demo/cz.yaml

# The primitives together, from the laptop namespace (demo/walkthrough).
$(CZBIN)/walkthrough: $(GO_SOURCES)
	CGO_ENABLED=0 $(GO) build -trimpath -o $@ ./demo/walkthrough

demo-deploy: cluster-up
	$(CLUSTER) demo >/dev/null

## test: unit tests, then end-to-end tests against the local cluster (brought up if needed), then the krew install
test: test-unit test-e2e test-krew

# deps first: unit tests use git, FUSE and Graphviz's dot, which a fresh machine lacks.
test-unit: deps lint
	$(GO) test ./...

# The e2e tests also use a build with the cztest tag: the plugin plus a hidden
# test primitive that drives the session journal like a real primitive.
$(CZBIN)/kubectl-cz-test: $(GO_SOURCES) $(IMAGES)/cz-agent.tar
	CGO_ENABLED=0 $(GO) build -trimpath -tags cztest -ldflags "$(LDFLAGS) $(call PIN,$(IMAGES)/cz-agent.digest)" -o $@ ./cmd/kubectl-cz

test-e2e: demo-deploy build $(CZBIN)/kubectl-cz-test
	$(GO) test -tags e2e -count=1 -v ./e2e/...

## bench: side-by-side figures on the local cluster (kubectl port-forward, cp, exec; direct path)
bench: demo-deploy build
	$(GO) run ./bench $(BENCH_FLAGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/...
	$(GO) vet -tags cztest ./plugin/...
	@# The darwin archives of make dist must keep building (teleport and mount refuse there in one line).
	CGO_ENABLED=0 GOOS=darwin GOARCH=arm64 $(GO) build -o /dev/null ./cmd/kubectl-cz

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin dist
