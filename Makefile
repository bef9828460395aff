# Thin entry points; the scripts they call do the work.
.DEFAULT_GOAL := help
.PHONY: help run test lint fmt bench image

help: ## List targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-6s %s\n", $$1, $$2}'

run: ## Run the daemon on 127.0.0.1:7878 (SQLite under ./data; workspaces run steward-agent as local processes)
	cargo build --release -p steward -p steward-agent
	STEWARD_DEFAULT_PROVIDER=process target/release/steward serve

test: ## Run every test (starts PostgreSQL for the store tests)
	scripts/test.sh

lint: ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all

image: ## Build the local image steward-agent:dev (static agent, FROM scratch; no registry)
	scripts/image.sh

bench: ## Run the benchmarks (release build, loopback only); see docs/PERFORMANCE.md
	scripts/bench.sh
