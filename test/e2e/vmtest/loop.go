package vmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Gate lets a test step a container's loop: a host directory bind-mounted at /ctl; try i of
// a gated TryLoop waits until the test has created /ctl/go<i> (the wait only stats: it opens
// and creates nothing, so that it does not consume a fault).
type Gate struct {
	Dir string
	t   testing.TB
}

// NewGate makes an empty gate directory.
func NewGate(t testing.TB, name string) *Gate {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "kfault-e2e", "gates", fmt.Sprintf("%s-%d", name, time.Now().UnixNano()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &Gate{Dir: dir, t: t}
}

// Mount mounts the gate at /ctl.
func (g *Gate) Mount() Mount { return Mount{HostPath: g.Dir, ContainerPath: "/ctl", Readonly: true} }

// Allow lets tries from..to (inclusive) run.
func (g *Gate) Allow(from, to int) {
	g.t.Helper()
	for i := from; i <= to; i++ {
		if err := os.WriteFile(filepath.Join(g.Dir, "go"+strconv.Itoa(i)), nil, 0o644); err != nil {
			g.t.Fatal(err)
		}
	}
}

// One try of a TryLoop, as busybox sh: each makes exactly one system call that a function
// fault can fail ($i is the try number).
const (
	// MkdirOp: mkdir(2) (busybox mkdir; glibc's mkdir is the mkdir system call on x86_64,
	// __x64_sys_mkdir). The OCI runtime does not call it between arming and exec.
	MkdirOp = "mkdir /tmp/try$i"
	// OpenOp: one openat(2), a shell redirect (no fork, no other file opened).
	OpenOp = "read -r x </etc/passwd"
)

// TryLoop is a busybox sh command that runs op n times, printing "try I ok" or
// "try I FAILED" per try, then sleeps. gated: try i waits for /ctl/go<i> (see Gate).
// interval: sleep after each try ("" for none).
func TryLoop(op string, n int, gated bool, interval string) []string {
	var b strings.Builder
	fmt.Fprintf(&b, "i=0; while [ $i -lt %d ]; do i=$((i+1)); ", n)
	if gated {
		b.WriteString("while [ ! -e /ctl/go$i ]; do sleep 0.2; done; ")
	}
	fmt.Fprintf(&b, `if %s; then echo "try $i ok"; else echo "try $i FAILED"; fi; `, op)
	if interval != "" {
		fmt.Fprintf(&b, "sleep %s; ", interval)
	}
	b.WriteString("done; echo loop done; exec sleep 3600")
	return []string{"sh", "-c", b.String()}
}

// MkdirLoop is TryLoop(MkdirOp, ...).
func MkdirLoop(n int, gated bool, interval string) []string {
	return TryLoop(MkdirOp, n, gated, interval)
}

// Try is one try of a TryLoop.
type Try struct {
	N  int
	OK bool
}

var tryLine = regexp.MustCompile(`(?m)try (\d+) (ok|FAILED)\s*$`)

// Tries parses the "try I ok|FAILED" lines of a log.
func Tries(log string) []Try {
	var out []Try
	for _, m := range tryLine.FindAllStringSubmatch(log, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, Try{N: n, OK: m[2] == "ok"})
	}
	return out
}

// Failed counts the failed tries.
func Failed(tries []Try) int {
	n := 0
	for _, t := range tries {
		if !t.OK {
			n++
		}
	}
	return n
}

// Summary renders tries compactly, e.g. "1:F 2:F 3:ok".
func Summary(tries []Try) string {
	parts := make([]string, len(tries))
	for i, t := range tries {
		r := "F"
		if t.OK {
			r = "ok"
		}
		parts[i] = fmt.Sprintf("%d:%s", t.N, r)
	}
	return strings.Join(parts, " ")
}

// WaitTries waits until a CRI container's log shows at least n tries and returns them all.
func WaitTries(t testing.TB, id string, n int, timeout time.Duration) []Try {
	t.Helper()
	return WaitTriesFunc(t, id, n, timeout, func() string { return Logs(t, id) })
}

// WaitTriesFunc is WaitTries with any log source.
func WaitTriesFunc(t testing.TB, what string, n int, timeout time.Duration, logs func() string) []Try {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		log := logs()
		tries := Tries(log)
		if len(tries) >= n {
			return tries
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d tries after %s; log:\n%s", what, len(tries), n, timeout, log)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
