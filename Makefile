# mqbridge — the two commands a new user runs are `make demo` and `make test`.
SWIFT ?= swift
BUILD_FLAGS ?=
RELEASE_PATH = .build-release

.PHONY: deps build test demo bench fuzz clean

# Installs missing system packages (apt-get); does nothing when all are present.
deps:
	@scripts/install-deps.sh

build: deps
	$(SWIFT) build $(BUILD_FLAGS)

# Builds and runs every test: unit tests and integration tests with real mosquitto processes.
test: deps
	$(SWIFT) build --build-tests $(BUILD_FLAGS)
	$(SWIFT) test --skip-build $(BUILD_FLAGS)

# The demo. See README.md for what it shows.
demo: build
	@scripts/demo.sh

# Benchmarks (not tests): release build, prints tables. `make bench BENCH=codec|acl|proxy|link|relay`,
# options after BENCH_ARGS (e.g. BENCH_ARGS="--rtt 20": link and relay with the sites 20 ms apart).
BENCH ?= codec
BENCH_ARGS ?=
bench: deps
	$(SWIFT) build -c release --scratch-path $(RELEASE_PATH) --product mqbridge-bench
	$(SWIFT) build -c release --scratch-path $(RELEASE_PATH) --product mqbridge
	$(RELEASE_PATH)/release/mqbridge-bench $(BENCH) $(BENCH_ARGS)

# libFuzzer on the decoder. `make fuzz RUNS=1000000`.
RUNS ?= 1000000
fuzz:
	@scripts/fuzz.sh $(RUNS)

clean:
	rm -rf .build .build-* Fuzz/.build
