# kfault — see README.md. The two commands a new user needs: `make demo` and `make test`.
GO      ?= go
PREFIX  ?= /usr/local
DESTDIR ?=
export CGO_ENABLED ?= 0

.PHONY: all build test test-cold test-matrix unit e2e demo bench generate vm-kernel vm-kernels vm-tools vm-kubelet vm-images install clean

all: build

build:
	$(GO) build -o out/bin/kfault ./cmd/kfault

## test: host unit tests + fuzz smoke, then every suite inside the test VM. One summary line.
test:
	test/run-tests all

## test-matrix: every kernel of the matrix (built 6.1, fmod_ret-only 6.1, built 6.12, Debian's
## 6.1 and 6.12 binaries): kfault check, the engine's VM tests and the seed scenario; one table.
test-matrix:
	test/run-tests matrix

## test-cold: make test from an empty cache, checking every build script's output contract.
test-cold:
	test/cold

unit:
	test/run-tests unit

e2e:
	test/run-tests e2e

## demo: boots the test VM and shows a fault hitting one container and not its neighbour.
## KERNEL=debian-6.12 (or any kernel of the matrix) runs it on that kernel.
demo: build
	test/vm/run $(if $(KERNEL),--kernel $(KERNEL)) -- test/demo/run

## bench: speed and cost figures, as ratios against a baseline from the same VM run.
bench: build
	test/bench/run

## generate: rebuild the BPF objects (needs clang; the output is committed).
generate:
	$(GO) generate ./bpf/...

vm-kernel:
	test/vm/build-kernel default

## vm-kernels: every kernel of the matrix: the built ones (default; fmodret, without
## BPF_KPROBE_OVERRIDE; built-6.12) and Debian's binary ones (downloaded).
vm-kernels:
	test/vm/build-kernel default
	test/vm/build-kernel fmodret
	test/vm/build-kernel built-6.12
	test/vm/fetch-kernel debian-6.1
	test/vm/fetch-kernel debian-6.12

vm-tools:
	test/vm/build-tools

vm-kubelet:
	test/vm/build-kubelet

vm-images:
	test/vm/build-images

install: build
	install -D -m 0755 out/bin/kfault $(DESTDIR)$(PREFIX)/bin/kfault
	install -D -m 0644 install/systemd/kfault.service $(DESTDIR)/etc/systemd/system/kfault.service
	install -D -m 0644 install/nri/10-kfault.conf $(DESTDIR)/etc/nri/conf.d/10-kfault.conf

clean:
	rm -rf out
