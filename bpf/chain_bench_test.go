package bpf

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf/predicate"
	"github.com/kfault/kfault/test/bench/figures"
)

// benchChain is a three-frame chain with a predicate on every frame: stat(2) of a missing
// "bananas" under the current directory.
var benchChain = []annotations.Frame{
	{FuncName: "__x64_sys_newfstatat", Parameters: "const struct pt_regs *regs", Predicate: "regs->si != 0"},
	{FuncName: "filename_lookup", Parameters: "int dfd, struct filename *name", Predicate: "dfd == -100"},
	{FuncName: "d_alloc_parallel", Parameters: "struct dentry *parent, const struct qstr *name", Predicate: bananas},
}

// The same fault in inject.py's syntax. STRCMP is inject.py's exact-match macro, and takes the
// string bare: its docs' 'bananas' is inside a shell-quoted argument, so the quotes go.
const benchChainBCC = `__x64_sys_newfstatat(const struct pt_regs *regs)(regs->si != 0) => ` +
	`filename_lookup(int dfd, struct filename *name)(dfd == -100) => ` +
	`d_alloc_parallel(struct dentry *parent, const struct qstr *name)(STRCMP(name->name, bananas))`

// TestBenchChainArm prints how long arming a three-frame call chain with predicates takes:
// predicate compilation, then the whole Arm (compile + load + attach of the should_failslab hook
// and three fentry/fexit pairs), cold on a new engine and then the median of re-arms after a
// full disarm. Beside it, the time bcc's inject-bpfcc takes until the same fault is in effect,
// when bcc is installed. Not a test: KFAULT_BENCH=1, inside the test VM (make bench):
//
//	go test -c -o out/bpf.test ./bpf
//	test/vm/run -- env KFAULT_BENCH=1 out/bpf.test -test.run TestBenchChainArm -test.v
func TestBenchChainArm(t *testing.T) {
	requireBench(t)
	rounds := envInt("KFAULT_BENCH_ROUNDS", 5)
	dir := tmpfsDir(t)
	path := filepath.Join(dir, "bananas")
	fault := slabChain(benchChain...)

	for _, m := range []Mechanism{MechanismFmodRet, MechanismKprobe} {
		t.Run(m.String(), func(t *testing.T) {
			e := newTestEngine(t, m)
			cg := newCgroup(t, "", "bench-chain")
			var compile, arm []time.Duration
			for r := 0; r < rounds; r++ {
				start := time.Now()
				if _, err := e.planChain(fault, "should_failslab"); err != nil {
					t.Fatal(err)
				}
				compile = append(compile, time.Since(start))
				start = time.Now()
				if err := e.armFaults("bench", cg.target, []annotations.Fault{fault}, nil); err != nil {
					t.Fatal(err)
				}
				arm = append(arm, time.Since(start))
				if r == 0 {
					expectAll(t, "stat bananas with the chain armed", runVictim(t, cg, "stat", 5, path), syscall.ENOMEM)
				}
				if err := e.Disarm("bench"); err != nil {
					t.Fatal(err)
				}
			}
			requireNoKfaultPrograms(t)
			figures.Print(fmt.Sprintf("%s 3-frame call chain with predicates: compile (median of %d)", m, rounds), median(compile).Round(time.Microsecond).String(), "")
			figures.Print(fmt.Sprintf("%s 3-frame call chain: Arm, cold / re-arm (median of %d; KeepIdle 0, so each loads)", m, rounds-1),
				fmt.Sprintf("%v / %v", arm[0].Round(time.Millisecond), median(arm[1:]).Round(time.Millisecond)), "")
		})
	}

	bcc, err := exec.LookPath("inject-bpfcc")
	if err != nil {
		fmt.Println("bench chain bcc: inject-bpfcc not available (Debian bpfcc-tools not installed): no bcc figure")
		return
	}
	// inject.py has no cgroup filter: the fault applies to everyone, so this process can watch
	// for it: the time from the start of inject-bpfcc until stat(bananas) fails with ENOMEM.
	for _, c := range []struct{ what, spec string }{
		{"the same three-frame chain", benchChainBCC},
		{"the one-frame KernelChaos example", `d_alloc_parallel(struct dentry *parent, const struct qstr *name)(STRCMP(name->name, bananas))`},
	} {
		took, err := bccArm(bcc, c.spec, path)
		if err != nil {
			fmt.Printf("bench chain bcc: inject-bpfcc (%s), %s: failed after %v: %v\n", bccVersion(), c.what, took.Round(time.Millisecond), err)
			continue
		}
		fmt.Printf("bench chain bcc: inject-bpfcc (%s), %s: armed in %v (start until stat fails with ENOMEM)\n", bccVersion(), c.what, took.Round(time.Millisecond))
	}
}

// bccArm runs inject-bpfcc kmalloc SPEC until stat(path) fails with ENOMEM, then stops it.
func bccArm(bcc, spec, path string) (time.Duration, error) {
	cmd := exec.Command(bcc, "kmalloc", spec)
	out := &limitedBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}()
	deadline := time.After(5 * time.Minute)
	for {
		if _, err := os.Stat(path); errors.Is(err, syscall.ENOMEM) {
			return time.Since(start), nil
		}
		select {
		case err := <-exited:
			exited <- err
			return time.Since(start), fmt.Errorf("exited (%v) before the fault took effect: %s", err, bccReason(out.String()))
		case <-deadline:
			return time.Since(start), fmt.Errorf("not armed within 5 minutes")
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// bccReason picks the telling lines out of bcc's output (compiler errors, verifier verdict).
func bccReason(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "error:") || strings.Contains(l, "not allowed") || strings.Contains(l, "Failed to") ||
			strings.HasPrefix(l, "Exception") || strings.Contains(l, "invalid") {
			keep = append(keep, strings.TrimSpace(l))
		}
	}
	if len(keep) == 0 {
		return out
	}
	return strings.Join(keep, " | ")
}

func bccVersion() string {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "bpfcc-tools").Output()
	if err != nil || len(out) == 0 {
		return "bcc, version unknown"
	}
	return "bcc " + string(out)
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	max int
	b   []byte
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if n := l.max - len(l.b); n > 0 {
		if len(p) < n {
			n = len(p)
		}
		l.b = append(l.b, p[:n]...)
	}
	return len(p), nil
}

func (l *limitedBuffer) String() string { return string(l.b) }

// TestBenchFrameSteps times the steps of one frame's attach and detach (where Arm's time goes).
func TestBenchFrameSteps(t *testing.T) {
	requireBench(t)
	e := newTestEngine(t, MechanismFmodRet)
	plan, err := e.planChain(slabChain(benchChain[2]), "should_failslab")
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ {
		fp := &frameProg{key: plan.frames[0].key, id: 1, gen: 1}
		step := time.Now()
		lap := func(what string) {
			fmt.Printf("bench frame step %-28s %v\n", what, time.Since(step).Round(time.Microsecond))
			step = time.Now()
		}
		if err := e.writeFrame(fp); err != nil {
			t.Fatal(err)
		}
		lap("write frame map")
		spec := e.spec.Copy()
		for n := range spec.Programs {
			if n != "kfault_frame_entry" && n != "kfault_frame_exit" {
				delete(spec.Programs, n)
			}
		}
		for _, ps := range spec.Programs {
			ps.AttachTo = fp.key.fn
		}
		insns, err := predicate.Splice(spec.Programs["kfault_frame_entry"].Instructions, plan.frames[0].prog)
		if err != nil {
			t.Fatal(err)
		}
		spec.Programs["kfault_frame_entry"].Instructions = insns
		spec.Variables["frame_id"].Set(fp.id)
		lap("spec copy + splice")
		kspec, cache, err := e.kernelTypes()
		if err != nil {
			t.Fatal(err)
		}
		coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
			MapReplacements: e.mapReplacements(),
			Programs:        ebpf.ProgramOptions{KernelTypes: kspec},
			Cache:           cache,
		})
		if err != nil {
			t.Fatal(err)
		}
		lap("load (verify) 2 programs")
		lx, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs["kfault_frame_exit"], AttachType: ebpf.AttachTraceFExit})
		if err != nil {
			t.Fatal(err)
		}
		lap("attach fexit (first on fn)")
		ln, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs["kfault_frame_entry"], AttachType: ebpf.AttachTraceFEntry})
		if err != nil {
			t.Fatal(err)
		}
		lap("attach fentry (second on fn)")
		ln.Close()
		lap("detach fentry")
		lx.Close()
		lap("detach fexit")
		coll.Close()
		lap("close programs")
	}
}

// TestBenchFrameBystander measures what a call-chain frame on a hot function costs a bystander:
// a task in no armed cgroup calling read(2) of one byte from /dev/zero in a loop (one vfs_read
// per iteration), with a chain frame on vfs_read armed for a sibling cgroup, against the same
// loop with nothing attached, interleaved in the same run. Two figures:
//
//   - cgroup-first: the frame as armed. The entry program's scope check misses (one array
//     lookup, one hash lookup for the one armed level) and returns; the exit program finds no
//     task storage.
//   - in scope, predicate false: the bystander's cgroup is added to the frame's scope maps by
//     hand (no rule, so the hot path is unchanged), so the entry program goes on as it did for
//     every task before the scope check: frame info, task-storage lookup, then the predicate
//     (count == 4242, false for a 1-byte read). This is the cost without the cgroup-first
//     check, plus the check itself (an upper bound of the old cost, by one hash lookup).
//
// The fault is a slab fault, so should_failslab is hooked as well; a 1-byte read of /dev/zero
// allocates nothing, so the figures are the frame's. Beside each ratio, the entry and exit
// programs' own run time per call (BPF stats; they leave out the trampoline). Not a test: KFAULT_BENCH=1, inside the test VM (make bench):
//
//	go test -c -o out/bpf.test ./bpf
//	test/vm/run -- env KFAULT_BENCH=1 out/bpf.test -test.run TestBenchFrameBystander -test.v
//
// or KFAULT_TEST_RUN=TestBenchFrameBystander make bench. KFAULT_BENCH_OPS (default 200000)
// sets the loop length, KFAULT_BENCH_ROUNDS (default 5) the interleaved rounds.
func TestBenchFrameBystander(t *testing.T) {
	requireBench(t)
	ops := envInt("KFAULT_BENCH_OPS", 200000)
	rounds := envInt("KFAULT_BENCH_ROUNDS", 5)
	e := newTestEngine(t, MechanismFmodRet)
	// Siblings, as containers are: the bystander's ancestor at the armed level is its own
	// cgroup, so the scope check does a real hash lookup (a miss).
	parent := newCgroup(t, "", "bench-frame")
	runner := newCgroup(t, parent.path, "bystander")
	armed := newCgroup(t, parent.path, "armed")
	fault := slabChain(annotations.Frame{FuncName: "vfs_read", Predicate: "count == 4242"})
	arm := func() *frameProg {
		t.Helper()
		if err := e.armFaults("bench-frame", armed.target, []annotations.Fault{fault}, nil); err != nil {
			t.Fatal(err)
		}
		for _, fp := range e.chains.frames {
			return fp
		}
		t.Fatal("no frame attached")
		return nil
	}
	// inScope puts the bystander's cgroup into fp's scope maps (on) or takes it out again.
	inScope := func(fp *frameProg, on bool) {
		t.Helper()
		k := kfaultFrameScopeKey{Cgroup: runner.target.ID, Frame: fp.id}
		bits := fp.scope.bits()
		var err error
		if on {
			if err = e.chains.frameScope.Put(k, uint32(1)); err == nil {
				err = e.chains.frameLevels.Put(fp.id, bits|1<<runner.target.Level)
			}
		} else {
			if err = e.chains.frameLevels.Put(fp.id, bits); err == nil {
				err = e.chains.frameScope.Delete(k)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	loop := func() time.Duration {
		r := runVictim(t, runner, "read", ops)
		if r.fail != 0 {
			t.Fatalf("bystander reads failed: %v", r)
		}
		return r.elapsed
	}
	loop() // warm up

	var base, out, in []time.Duration
	for r := 0; r < rounds; r++ {
		fp := arm()
		out = append(out, loop())
		inScope(fp, true)
		in = append(in, loop())
		inScope(fp, false)
		if err := e.Disarm("bench-frame"); err != nil {
			t.Fatal(err)
		}
		if left := loadedKfaultPrograms(t); len(left) != 0 {
			t.Fatalf("programs left attached for the baseline: %v", left)
		}
		base = append(base, loop())
	}
	mb := median(base)
	for _, c := range []struct {
		what string
		d    []time.Duration
	}{
		{"cgroup-first (bystander outside the scope)", out},
		{"in scope, predicate false (no cgroup-first)", in},
	} {
		r := figures.Paired(base, c.d)
		figures.Print(fmt.Sprintf("frame on vfs_read, a bystander's read loop, %s (vs nothing, %d pairs; %.1f vs %.1f %s/op)", c.what, rounds,
			float64(median(c.d))/float64(ops), float64(mb)/float64(ops), clockUnit()), fmt.Sprintf("ratio %.3f", r.Median), r.Interval())
	}

	// The programs' own run time per call, with BPF stats on (which add two clock reads).
	fp := arm()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("enable BPF stats: %v", err)
	}
	defer stats.Close()
	for _, scoped := range []bool{false, true} {
		if scoped {
			inScope(fp, true) // the bystander starts outside the scope
		}
		what := "cgroup-first"
		if scoped {
			what = "in scope, predicate false"
		}
		for _, name := range []string{"kfault_frame_entry", "kfault_frame_exit"} {
			perCall, calls := progCost(t, fp.coll.Programs[name], loop)
			figures.Print(fmt.Sprintf("frame on vfs_read, %s per bystander call, %s (BPF stats)", name, what), fmt.Sprintf("%.1f %s", perCall, clockUnit()), fmt.Sprintf("mean of %d calls", calls))
		}
	}
	inScope(fp, false)
	if err := e.Disarm("bench-frame"); err != nil {
		t.Fatal(err)
	}
}
