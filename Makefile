# Signet's developer entry points. `make test` is the README's test command; `make check` is CI.

CARGO  ?= cargo
PYTHON ?= python3
CRD    := crds/signaturepolicies.signet.dev.yaml
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
IMAGE  ?= ghcr.io/signet-dev/signet:$(VERSION)
# The oldest Kubernetes k8s-openapi 0.29 supports, and the newest kubernetes-validate knows.
KUBE_VERSIONS ?= 1.33.0 1.37.0

.PHONY: build test lint fmt crds manifests image check e2e bench

build:
	$(CARGO) build --locked

test:
	$(CARGO) test --locked --all-targets
	$(CARGO) test --locked --doc

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Regenerate the checked-in CRD from the Rust types (a test fails while it is stale).
crds:
	$(CARGO) run --locked --quiet -- crd > $(CRD)

# The CRD and examples checked by tools that are not Signet's own.
manifests:
	@for v in $(KUBE_VERSIONS); do kubernetes-validate --strict --quiet -k $$v $(CRD) || exit 1; echo "ok   $(CRD) is a valid CustomResourceDefinition for Kubernetes $$v"; done
	$(PYTHON) hack/crdcheck.py $(CRD) examples/*.yaml examples/invalid/*.yaml
	$(CARGO) run --locked --quiet -- validate -f examples/
	@mkdir -p target/manifests
	@for f in examples/*.yaml; do $(CARGO) run --locked --quiet -- render -f $$f > target/manifests/$$(basename $$f) || exit 1; done
	@for v in $(KUBE_VERSIONS); do kubernetes-validate --strict --quiet -k $$v target/manifests/*.yaml || exit 1; echo "ok   signet render output of every example is valid for Kubernetes $$v"; done
	@if $(CARGO) run --locked --quiet -- validate -f examples/invalid/ > /dev/null; then echo "FAIL examples/invalid/ passed validation"; exit 1; else echo "ok   every file in examples/invalid/ is refused"; fi

# The container image (Dockerfile), where a container engine runs.
image:
	@engine=$$(command -v docker || command -v podman || true); \
	if [ -z "$$engine" ]; then echo "make image: no container engine here (neither docker nor podman is installed); nothing was built" >&2; exit 1; fi; \
	if ! $$engine info > /dev/null 2>&1; then echo "make image: $$engine is installed but cannot reach its engine (is the daemon running?); nothing was built" >&2; exit 1; fi; \
	$$engine build -t $(IMAGE) .

check: lint test manifests

# Cluster tests against the current kubeconfig (kind, k3d): runs a controller against it for
# the duration of the tests.
e2e:
	$(CARGO) build --locked
	@./target/debug/signet controller --leader-election=false --metrics-bind-address 127.0.0.1:18080 > target/e2e-controller.log 2>&1 & \
	  pid=$$!; trap "kill $$pid" EXIT; \
	  $(CARGO) test --locked --test e2e -- --ignored --test-threads=1

# Benchmarks print figures; see README. send_reminders needs the PostgreSQL server of the tests.
bench:
	$(CARGO) bench --locked --bench reconcile
	$(CARGO) bench --locked --bench send_reminders
