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
	// Alloc makes the LSM hooks through which the kernel allocates the objects a process
	// creates return -ENOMEM (failtype 3: kfault's own, KernelChaos has 0-2). LSM hooks can be
	// overridden with fmod_ret on kernels without error injection (every distribution kernel).
	Alloc FailType = 3
)

// FailPoint is what a failtype means: the kernel functions it overrides, what they return while
// the fault fires, and the kernel option that keeps them in the kernel.
type FailPoint struct {
	Type FailType
	Name string // kfault's name, also the hot-path program's for a fault point: slab, page, bio
	// Functions are what the failtype overrides: one fault point on the error-injection list
	// (slab, page, bio), or LSM hooks (alloc), of which a kernel may lack some: the fault hooks
	// those it has, all with one rule.
	Functions []string
	Return    int64  // what Functions return while the fault fires
	Config    string // the option that keeps Functions in the kernel (fault points: on 6.11+, CONFIG_FUNCTION_ERROR_INJECTION too)
}

// FailPoints is every failtype, indexed by its number: the one place its facts are written.
var FailPoints = [...]FailPoint{
	Slab:  {Slab, "slab", []string{"should_failslab"}, -int64(unix.ENOMEM), "CONFIG_FAILSLAB"},
	Page:  {Page, "page", []string{"should_fail_alloc_page"}, 1, "CONFIG_FAIL_PAGE_ALLOC"},
	Bio:   {Bio, "bio", []string{"should_fail_bio"}, -int64(unix.EIO), "CONFIG_FAIL_MAKE_REQUEST"},
	Alloc: {Alloc, "alloc", allocHooks, -int64(unix.ENOMEM), "CONFIG_SECURITY"},
}

// allocHooks are the LSM hooks of failtype alloc: each is called where the kernel allocates an
// object for a process, and failing it fails that allocation (docs/annotations.md says what a
// process sees for each).
var allocHooks = []string{
	"security_file_alloc",          // files: open, pipe, socket, ...
	"security_inode_alloc",         // inodes: pipes, sockets, new files
	"security_sk_alloc",            // sockets (needs CONFIG_SECURITY_NETWORK)
	"security_task_alloc",          // tasks: fork, clone
	"security_prepare_creds",       // credentials: fork, setuid, capset, ...
	"security_sb_alloc",            // superblocks: mounting a new filesystem
	"security_msg_msg_alloc",       // System V IPC messages: msgsnd
	"security_vm_enough_memory_mm", // memory commitments: mmap, brk, execve
}

// Point returns the failtype's row of FailPoints.
func (t FailType) Point() (FailPoint, bool) {
	if t < 0 || int(t) >= len(FailPoints) {
		return FailPoint{}, false
	}
	return FailPoints[t], true
}

// String returns the kfault name of the fail type: slab, page, bio or alloc.
func (t FailType) String() string {
	if p, ok := t.Point(); ok {
		return p.Name
	}
	return "FailType(" + strconv.Itoa(int(t)) + ")"
}

// HookFunctions are the kernel functions the fail type overrides (nil for an unknown one).
func (t FailType) HookFunctions() []string {
	p, _ := t.Point()
	return p.Functions
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
	Function    string        // extension: a function on the error-injection list, or an LSM hook (security_*)
	Errno       int           // with Function: the positive errno to return as -Errno
	CallChain   []Frame       // outermost frame first
	Headers     []string      // accepted for KernelChaos compatibility, unused (BTF)
	Devices     []string      // bio only: block devices (/dev paths or major:minor) to limit the fault to
	Probability float64       // percent, in (0, 100]
	Times       uint64        // maximum number of injected faults; 0 = unlimited
	Duration    time.Duration // 0 = until disarmed
	Select      *Select       // which containers get the fault; nil = every one
}
