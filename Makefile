# The map of every task. `make test` is the one command that proves the product.
GO      ?= go
BIN     := bin
PKGS    := ./...
TARGET  ?= amd64
IMAGE   ?= cell.img

.PHONY: build run test unit integration bench image vm lint clean images catalog ui

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/cell ./cmd/cell
	CGO_ENABLED=0 $(GO) build -o $(BIN)/cellctl ./cmd/cellctl

# Runs the whole cell on this machine with safe defaults: data in ./var, API on
# 127.0.0.1:3000, the front (HTTPS) on 127.0.0.1:8443 and 8080, WireGuard in userspace (gVisor netstack unless root asks for tun).
run: build
	./$(BIN)/cell -data ./var -listen 127.0.0.1:3000 -front 127.0.0.1:8443,127.0.0.1:8080

# Every test: unit tests with fakes always; as root on Linux also the network
# namespace and daemon tests; the QEMU image tests where qemu-system-x86_64 exists.
test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 60m $(PKGS)

unit:
	$(GO) test -count=1 -short $(PKGS)

bench:
	$(GO) test -count=1 -run '^$$' -bench . -benchmem -timeout 60m $(PKGS)

image: build
	./$(BIN)/cellctl image build -target $(TARGET) -o $(IMAGE)

# The first-party service images (OCI archives, linux/amd64 and arm64) into
# images/out; reproducible, so they match the digests the catalog pins.
images:
	$(GO) run ./cmd/cellctl images build -o images/out

# After a service's source changed: rebuild its image, pin the new digests in
# images/catalog/default.json and re-sign it with pic-catalog.key.
catalog:
	$(GO) run ./cmd/cellctl catalog sign -key pic-catalog.key -o images/catalog -images images/out

vm: image
	./$(BIN)/cellctl vm run -image $(IMAGE)

# The browser app (ui/) has no build step: plain ES modules, HTML and CSS,
# embedded as they are. `make ui` checks it: the CSP and no-outside-code
# rules, then the pages in Debian's Chromium (ui/browsertest).
ui:
	$(GO) test -count=1 ./ui/...

lint:
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet $(PKGS)

clean:
	rm -rf $(BIN) $(IMAGE)
