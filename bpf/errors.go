package bpf

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them (test with errors.Is) and say
// what was tried and which kernel option or setting is missing.
var (
	// ErrNotInjectable: the function does not exist, or is not on the kernel's error-injection
	// list (/sys/kernel/debug/error_injection/list), so neither mechanism may override it.
	ErrNotInjectable = errors.New("function is not error-injectable")
	// ErrMechanismUnavailable: the requested (or every) override mechanism does not work here.
	ErrMechanismUnavailable = errors.New("override mechanism unavailable")
	// ErrNoBTF: the kernel has no BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF).
	ErrNoBTF = errors.New("kernel BTF unavailable")
	// ErrNotSupported: the fault asks for something this engine, or this kernel, does not do
	// (e.g. a callchain on a kernel without task storage).
	ErrNotSupported = errors.New("not supported")
	// ErrInvalidTarget: the cgroup target cannot be used.
	ErrInvalidTarget = errors.New("invalid cgroup target")
	// ErrLimit: a fixed capacity of the engine (rules, hooks, levels) is exhausted.
	ErrLimit = errors.New("engine capacity exceeded")
	// ErrNotArmed: no rules are armed under this key.
	ErrNotArmed = errors.New("not armed")
	// ErrClosed: the engine was closed.
	ErrClosed = errors.New("engine closed")
)
