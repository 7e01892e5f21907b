// Package annotations turns the text of a kfault annotation into typed, validated faults.
// It is pure Go: it knows nothing about BPF or containerd.
package annotations

import (
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

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

// FailPoint is what a failtype means: the kernel fault point it overrides, what the fault
// point returns while the fault fires, and the kernel option that keeps it in the kernel.
type FailPoint struct {
	Type     FailType
	Name     string // kfault's name, also the hot-path program's: slab, page, bio
	Function string // the kernel fault point
	Return   int64  // what Function returns while the fault fires
	Config   string // the option that keeps Function on 6.11+ (CONFIG_FUNCTION_ERROR_INJECTION too)
}

// FailPoints is every failtype, indexed by its number: the one place its facts are written.
var FailPoints = [...]FailPoint{
	Slab: {Slab, "slab", "should_failslab", -int64(unix.ENOMEM), "CONFIG_FAILSLAB"},
	Page: {Page, "page", "should_fail_alloc_page", 1, "CONFIG_FAIL_PAGE_ALLOC"},
	Bio:  {Bio, "bio", "should_fail_bio", -int64(unix.EIO), "CONFIG_FAIL_MAKE_REQUEST"},
}

// Point returns the failtype's row of FailPoints.
func (t FailType) Point() (FailPoint, bool) {
	if t < 0 || int(t) >= len(FailPoints) {
		return FailPoint{}, false
	}
	return FailPoints[t], true
}

// String returns the kfault name of the fail type: slab, page or bio.
func (t FailType) String() string {
	if p, ok := t.Point(); ok {
		return p.Name
	}
	return "FailType(" + strconv.Itoa(int(t)) + ")"
}

// HookFunction is the kernel fault point of the fail type ("" for an unknown one).
func (t FailType) HookFunction() string {
	p, _ := t.Point()
	return p.Function
}

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
	Devices     []string      // bio only: block devices (/dev paths or major:minor) to limit the fault to
	Probability float64       // percent, in (0, 100]
	Times       uint64        // maximum number of injected faults; 0 = unlimited
	Duration    time.Duration // 0 = until disarmed
	Select      *Select       // which containers get the fault; nil = every one
}
