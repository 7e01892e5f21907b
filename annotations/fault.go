// Package annotations turns the text of a kfault annotation into typed, validated faults.
// It is pure Go: it knows nothing about BPF or containerd.
package annotations

import "time"

// FailType is the KernelChaos failtype: which kernel fault point to override.
type FailType int

const (
	// Slab makes should_failslab return -ENOMEM (failtype 0).
	Slab FailType = 0
	// Page makes should_fail_alloc_page return true (failtype 1).
	Page FailType = 1
	// Bio makes should_fail_bio return -EIO (failtype 2).
	Bio FailType = 2
)

// Frame is one entry of a call chain: a kernel function that must be on the task's stack.
type Frame struct {
	FuncName   string `json:"funcname"`
	Parameters string `json:"parameters,omitempty"` // C parameter list; optional, BTF knows it
	Predicate  string `json:"predicate,omitempty"`  // e.g. STRNCMP(name->name, "bananas", 8)
}

// Fault is one validated fault. Exactly one of FailType (when Function is empty) or
// Function+Errno selects what to override.
type Fault struct {
	FailType    FailType      // meaningful only when Function == ""
	Function    string        // extension: any function on the error-injection list
	Errno       int           // with Function: the positive errno to return as -Errno
	CallChain   []Frame       // outermost frame first
	Headers     []string      // accepted for KernelChaos compatibility, unused (BTF)
	Probability float64       // percent, in (0, 100]
	Times       uint64        // maximum number of injected faults; 0 = unlimited
	Duration    time.Duration // 0 = until disarmed
}
