# Docker targets (included by the Makefile). See docker/compose.yml for the deployment.
#
# DOCKER_BASE_IMAGE: the image docker/Dockerfile builds FROM. Left empty, docker-build uses the
# official slim image when it is present or can be pulled, otherwise logdist-base:bookworm,
# building that with docker/base-image.sh (debootstrap; no registry needed) when missing.

DOCKER_DEFAULT_BASE := python:3.11-slim-bookworm
DOCKER_LOCAL_BASE := logdist-base:bookworm
DOCKER_IMAGE ?= logdist:local
DOCKER_BASE_IMAGE ?=
DOCKER_PROJECT ?= logdist
# wal once the distributor accepts it; `make docker-up LOGDIST_DURABILITY=memory` otherwise.
LOGDIST_DURABILITY ?= wal
export LOGDIST_DURABILITY
COMPOSE_BIN ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE = $(COMPOSE_BIN) -f docker/compose.yml -p $(DOCKER_PROJECT)
SERVICE ?=
GENERATE_ARGS ?=

.PHONY: docker-base docker-wheelhouse docker-build docker-secrets docker-up docker-down docker-logs docker-status \
	docker-generate docker-verify-weights docker-chaos

docker-base: ## build the local base image logdist-base:bookworm (debootstrap + docker import; no registry)
	docker/base-image.sh

docker-wheelhouse: wheel ## the logdist wheel + dependency wheels into docker/.build/wheelhouse (offline image build)
	docker/wheelhouse.sh

docker-build: docker-wheelhouse ## build the logdist image (one image, every role), offline, FROM a base it picks
	@set -euo pipefail; base="$(DOCKER_BASE_IMAGE)"; \
	if [[ -z $$base ]]; then \
	  if docker image inspect $(DOCKER_DEFAULT_BASE) >/dev/null 2>&1; then base=$(DOCKER_DEFAULT_BASE); \
	  elif docker image inspect $(DOCKER_LOCAL_BASE) >/dev/null 2>&1; then base=$(DOCKER_LOCAL_BASE); \
	  elif timeout 120 docker pull -q $(DOCKER_DEFAULT_BASE) >/dev/null 2>&1; then base=$(DOCKER_DEFAULT_BASE); \
	  else echo "==> $(DOCKER_DEFAULT_BASE) cannot be pulled: building $(DOCKER_LOCAL_BASE) instead"; \
	    docker/base-image.sh; base=$(DOCKER_LOCAL_BASE); fi; \
	fi; \
	echo "==> docker build $(DOCKER_IMAGE) FROM $$base"; \
	docker build -q --force-rm -f docker/Dockerfile --build-arg BASE_IMAGE=$$base -t $(DOCKER_IMAGE) docker

docker-secrets: ## tokens and TLS certificates of the compose stack into docker/.secrets (kept if present)
	docker/secrets.sh

docker-up: docker-build docker-secrets ## build and start the stack (emitter :8080, distributor https :8081, analyzers :8082-8085)
	LOGDIST_IMAGE=$(DOCKER_IMAGE) $(COMPOSE) up -d --no-build --remove-orphans
	@docker/status.sh --wait 90 $(DOCKER_PROJECT)

docker-down: ## stop and remove the stack (keeps the distributor's volume; VOLUMES=1 removes it too)
	$(COMPOSE) down --remove-orphans $(if $(VOLUMES),--volumes)

docker-logs: ## logs of the stack, or of one service (SERVICE=distributor); FOLLOW=1 follows
	$(COMPOSE) logs --tail=200 $(if $(FOLLOW),--follow) $(SERVICE)

docker-status: ## containers and their health, the distributor's queue, each analyzer's processed count
	@docker/status.sh $(DOCKER_PROJECT)

docker-generate: ## one batch of 250 messages through the emitter (GENERATE_ARGS="..." runs `logdist generate` instead)
	@if [[ -n "$(GENERATE_ARGS)" ]]; then \
	  $(COMPOSE) exec -T emitter logdist generate --url https://distributor:8080/logs \
	    --token-file /run/secrets/ingest_token --cacert /run/secrets/ca_cert $(GENERATE_ARGS); \
	else \
	  $(COMPOSE) exec -T emitter python3 -c 'import urllib.request as u; \
	print(u.urlopen(u.Request("http://127.0.0.1:8080/generate", method="POST"), timeout=60).read().decode())'; \
	fi

# verify-weights reads the distributor's admin API: from inside its container, on the admin
# listener (https, not published), with the admin token and the CA mounted there.
docker-verify-weights: ## each analyzer's share of the processed messages against its weight
	$(COMPOSE) exec -T distributor logdist verify-weights --url https://localhost:9090 \
	  --token-file /run/secrets/admin_token --cacert /run/secrets/ca_cert

docker-chaos: ## chaos suite: faults under steady traffic, then a loss/duplicate/share table (exits 1 on loss)
	docker/chaos.sh
