# Signet's developer entry points. `make test` is the README's test command; `make check` is CI.

CARGO  ?= cargo
PYTHON ?= python3
CRD    := crds/signaturepolicies.signet.dev.yaml
CHART  := charts/signet
# The chart checks use this helm, fetched by hack/get-helm.sh (tests/chart/ looks here too).
HELM   := target/tools/helm
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
IMAGE  ?= ghcr.io/signet-dev/signet:$(VERSION)
# The oldest Kubernetes k8s-openapi 0.29 supports, and the newest kubernetes-validate knows.
KUBE_VERSIONS ?= 1.33.0 1.37.0

.PHONY: build test lint fmt crds manifests tools chart alerts image check e2e bench

build:
	$(CARGO) build --locked

# The chart tests need helm, so the tests fetch it first (once).
test: tools
	$(CARGO) test --locked --all-targets
	$(CARGO) test --locked --doc

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Regenerate the checked-in CRD, and the chart's copy, from the Rust types (tests fail while
# either is stale).
crds:
	$(CARGO) run --locked --quiet -- crd > $(CRD)
	cp $(CRD) $(CHART)/crds/

# The CRD and examples checked by tools that are not Signet's own.
manifests:
	@for v in $(KUBE_VERSIONS); do kubernetes-validate --strict --quiet -k $$v $(CRD) || exit 1; echo "ok   $(CRD) is a valid CustomResourceDefinition for Kubernetes $$v"; done
	$(PYTHON) hack/crdcheck.py $(CRD) examples/*.yaml examples/invalid/*.yaml
	$(CARGO) run --locked --quiet -- validate -f examples/
	@mkdir -p target/manifests
	@for f in examples/*.yaml; do $(CARGO) run --locked --quiet -- render -f $$f > target/manifests/$$(basename $$f) || exit 1; done
	@for v in $(KUBE_VERSIONS); do kubernetes-validate --strict --quiet -k $$v target/manifests/*.yaml || exit 1; echo "ok   signet render output of every example is valid for Kubernetes $$v"; done
	@if $(CARGO) run --locked --quiet -- validate -f examples/invalid/ > /dev/null; then echo "FAIL examples/invalid/ passed validation"; exit 1; else echo "ok   every file in examples/invalid/ is refused"; fi

# Tools the checks need that pip does not install (see hack/requirements.txt for those).
tools:
	@bash hack/get-helm.sh $(dir $(HELM))

# The Helm chart, with the real helm: lint, render with default values and with every option
# on, validate both renders strictly, and make sure each file in ci/bad/ is refused for the
# reason its first line states. tests/chart/ checks the rendered flags and RBAC.
chart: tools
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) -f $(CHART)/ci/all-options-values.yaml
	@mkdir -p target/chart
	$(HELM) template signet $(CHART) -n signet-system --include-crds > target/chart/default.yaml
	$(HELM) template signet $(CHART) -n signet-system --include-crds -f $(CHART)/ci/all-options-values.yaml > target/chart/all-options.yaml
	$(PYTHON) hack/chartcheck.py $(KUBE_VERSIONS:%=-k %) target/chart/default.yaml target/chart/all-options.yaml
	@for f in $(CHART)/ci/bad/*.yaml; do \
	  expect=$$(sed -n 's/^# expect: //p' $$f); \
	  if [ -z "$$expect" ]; then echo "FAIL $$f has no '# expect: ' line"; exit 1; fi; \
	  if out=$$($(HELM) template signet $(CHART) -f $$f 2>&1); then echo "FAIL $$f was accepted"; exit 1; fi; \
	  case "$$out" in *"$$expect"*) echo "ok   $$f refused: $$expect";; \
	    *) echo "FAIL $$f was refused, but not with \"$$expect\":"; echo "$$out"; exit 1;; esac; \
	done

# The chart's alerts under the real promtool (Debian package `prometheus`): the rendered
# PrometheusRule's rules pass `promtool check rules`, and the unit tests in tests/alerts/ (one
# or more per alert, each scenario's series in, the alert firing after its `for` or staying
# quiet) pass `promtool test rules`. Without promtool it fails; see hack/check-alerts.sh.
alerts: tools
	@bash hack/check-alerts.sh $(HELM)

# The container image (Dockerfile), where a container engine runs.
image:
	@engine=$$(command -v docker || command -v podman || true); \
	if [ -z "$$engine" ]; then echo "make image: no container engine here (neither docker nor podman is installed); nothing was built" >&2; exit 1; fi; \
	if ! $$engine info > /dev/null 2>&1; then echo "make image: $$engine is installed but cannot reach its engine (is the daemon running?); nothing was built" >&2; exit 1; fi; \
	$$engine build -t $(IMAGE) .

check: tools lint test manifests chart alerts

# Cluster tests against the current kubeconfig (kind, k3d): runs a controller against it for
# the duration of the tests.
e2e:
	$(CARGO) build --locked
	@./target/debug/signet controller --leader-election=false --metrics-bind-address 127.0.0.1:18080 > target/e2e-controller.log 2>&1 & \
	  pid=$$!; trap "kill $$pid" EXIT; \
	  $(CARGO) test --locked --test e2e -- --ignored --test-threads=1

# Benchmarks print figures; see docs/benchmarks.md. The worker benchmarks need the PostgreSQL
# server of the tests.
bench:
	$(CARGO) bench --locked --bench reconcile
	$(CARGO) bench --locked --bench send_reminders
	$(CARGO) bench --locked --bench check_timeouts
