# Helm chart and OLM bundle. Included by the top-level Makefile (after e2e/e2e.mk,
# which defines E2E_BIN_DIR, where `make tools` puts helm).

MANIFESTS_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
HELM ?= $(E2E_BIN_DIR)/helm
PYTHON ?= python3
CHART_DIR := $(MANIFESTS_DIR)/charts/llmd-operator

.PHONY: manifests manifests-test operator-verify python-yaml
python-yaml: ## PyYAML for the generator and its tests (from PyPI when missing)
	@$(PYTHON) -c 'import yaml' 2>/dev/null || $(PYTHON) -m pip install -q pyyaml

manifests: tools python-yaml ## regenerate the chart's CRDs and the OLM bundle from crds/, config/ and the chart
	PYTHONDONTWRITEBYTECODE=1 $(PYTHON) $(MANIFESTS_DIR)/hack/generate.py --helm $(HELM)

operator-verify: ## build the operator-framework bundle validator (cached)
	$(MANIFESTS_DIR)/hack/build-operator-verify.sh

manifests-test: tools operator-verify python-yaml ## helm lint/template, chart and bundle drift checks, bundle validation
	$(HELM) lint --strict $(CHART_DIR)
	$(HELM) template llmd-operator $(CHART_DIR) --namespace llmd-system > /dev/null
	PYTHONDONTWRITEBYTECODE=1 HELM=$(HELM) OPERATOR_VERIFY="$$($(MANIFESTS_DIR)/hack/build-operator-verify.sh --print-bin-dir)/operator-verify" \
	  $(PYTHON) -m unittest discover -v -s $(MANIFESTS_DIR)/hack -p 'test_*.py'
