# usersd — the two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
export PATH := $(PATH):/opt/swift/usr/bin

.PHONY: run test lint unit e2e build release bench soak deb clean

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
