# usersd — the two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
export PATH := $(PATH):/opt/swift/usr/bin

.PHONY: run test lint unit e2e e2e-postgres cluster build release bench bench-peers soak deb clean

## run: install what is missing, build, serve on http://127.0.0.1:8080 (Ctrl-C stops)
run:
	scripts/deps.sh run
	swift build -c release
	scripts/run.sh

## test: install what is missing, lint, build, run unit and end-to-end tests
test:
	scripts/deps.sh test
	$(MAKE) lint
	swift build --build-tests
	swift test --skip-build
	USERSD_BIN=$$(swift build --show-bin-path)/usersd python3 -m pytest -q Tests/e2e
	$(MAKE) e2e-postgres

## e2e-postgres: the API end-to-end suite again, on a private PostgreSQL cluster (the
## files below; the FastCGI fuzzing, SQLite fault, backup, systemd and packaging files
## test what does not depend on the backend or only exists on SQLite)
PG_E2E := test_routes test_create test_tasks test_email_key test_streaming test_concurrency test_tutorial \
	test_stock_nginx test_keepalive test_log_escaping test_tcp_listen test_openapi test_cli test_hardening test_lifecycle test_auth
e2e-postgres:
	USERSD_TEST_BACKEND=postgres USERSD_BIN=$$(swift build --show-bin-path)/usersd \
		python3 -m pytest -q $(addprefix Tests/e2e/,$(addsuffix .py,$(PG_E2E)))

## cluster: a private PostgreSQL, three usersd hosts and nginx on http://127.0.0.1:8080 (Ctrl-C stops all)
cluster:
	scripts/deps.sh cluster
	swift build -c release
	scripts/cluster.sh

## lint: the toolchain's swift-format with the checked-in .swift-format; any finding fails
lint:
	swift format lint --strict --recursive --parallel Sources Tests Package.swift

unit:
	swift test

e2e:
	swift build
	USERSD_BIN=$$(swift build --show-bin-path)/usersd python3 -m pytest -q Tests/e2e

build:
	swift build

release:
	swift build -c release

## bench: nginx `return 200`, the C libfcgi floor and usersd side by side with wrk (~4 min); see bench/README.md
bench:
	scripts/deps.sh bench
	bench/run.sh

## bench-peers: usersd beside PHP-FPM + PDO SQLite and Go net/http/fcgi + SQLite (~4 min; ../shared/bench)
bench-peers:
	scripts/deps.sh bench
	bench/peers.sh

## soak: mixed read/write/task load through nginx for DURATION seconds (default 60)
DURATION ?= 60
soak:
	scripts/deps.sh soak
	scripts/soak.sh $(DURATION)

## deb: build dist/usersd_<version>_amd64.deb (static Swift runtime, stripped)
deb:
	scripts/deps.sh deb
	scripts/build-deb.sh

clean:
	rm -rf .build .build-deb dist run
