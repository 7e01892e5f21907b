package bpf

// The interrupt-context filter (in_task, kfault.bpf.c): an allocation made in a hard or soft
// interrupt runs on whatever task it interrupted, and is never failed, whatever that task's
// cgroup and call chains say. Inside the test VM only (see vm_test.go):
//
//	test/vm/run -- out/bpf.test -test.v -test.run TestVMInterruptContext

import (
	"testing"

	"github.com/kfault/kfault/annotations"
)

// TestVMInterruptContextSpared: TCP over 127.0.0.1 from a victim cgroup. Loopback packets are
// received in NET_RX softirq, which local_bh_enable runs on the sending task: the victim's
// connect(2) runs the listener's tcp_v4_rcv for the SYN, which allocates the request sock and the
// SYN-ACK there, and its send of the final ACK runs the one that allocates the new socket, all
// while the victim is current. A 100% slab fault on the victim with a call-chain frame on
// tcp_v4_rcv (which runs in softirq only) has everything it needs there: current is in the
// victim's cgroup, and the frame's entry program, which runs in any context, has recorded
// tcp_v4_rcv in the victim's task state. Only the filter spares those allocations.
//
// The filter subtest checks that nothing is failed (no injection counted, every connection
// made, no SYN or ACK dropped by the listener), with a positive control in task context; the
// filter-off subtest is the control the other way: with the filter turned off, the same fault
// fails an allocation in that softirq, and the listener drops a packet.
func TestVMInterruptContextSpared(t *testing.T) {
	forEachMechanism(t, func(t *testing.T, e *Engine) {
		if e.preemptCount == 0 {
			t.Fatal("the engine found no preempt count: the interrupt-context filter is off on this kernel")
		}
		t.Logf("preempt count at per-cpu %#x, __per_cpu_offset at %#x", e.preemptCount, e.perCPUOffset)
		victimCg := newCgroup(t, "", "irq-victim")
		byCg := newCgroup(t, "", "irq-bystander")
		rcv := slabChain(annotations.Frame{FuncName: "tcp_v4_rcv"})
		const conns = 10

		t.Run("filter", func(t *testing.T) {
			expectSoftirqSpared(t, e, "softirq", victimCg, byCg, rcv, conns)

			// Positive control: the same hook fails the victim in task context. A fault under
			// inet_stream_connect fails connect(2)'s own allocations, before the SYN is sent.
			// (__x64_sys_connect has two BTF entries in 6.1, and fentry refuses it.)
			armOne(t, e, "task", victimCg, slabChain(annotations.Frame{FuncName: "inet_stream_connect"}))
			vr := runVictim(t, victimCg, "tcp", 5)
			if vr.fail != vr.n || vr.n == 0 {
				t.Errorf("victim with a fault under inet_stream_connect: want every connection to fail; got %s", vr)
			} else {
				t.Logf("victim with a fault under inet_stream_connect: %s", vr)
			}
			if c := counts(t, e, "task"); c < uint64(vr.n) {
				t.Errorf("%d faults injected under inet_stream_connect, want at least %d", c, vr.n)
			}
			expectTCP(t, "bystander with a fault under inet_stream_connect on the victim", runVictim(t, byCg, "tcp", 5))
			if c := counts(t, e, "softirq"); c != 0 {
				t.Errorf("%d faults injected under tcp_v4_rcv; want 0", c)
			}
		})

		t.Run("filter off", func(t *testing.T) {
			disableIRQFilter(t, e)
			expectSoftirqFaulted(t, e, "softirq-unfiltered", victimCg, byCg, rcv, conns)
		})
	})
}

// expectSoftirqSpared arms f, a fault under a frame that runs in softirq only (tcp_v4_rcv), on
// victim, and checks that TCP over 127.0.0.1 from victim and from by is untouched: every
// connection made, nothing dropped, no fault injected.
func expectSoftirqSpared(t *testing.T, e *Engine, key string, victim, by *cgroup, f annotations.Fault, conns int) {
	t.Helper()
	armOne(t, e, key, victim, f)
	expectTCP(t, "bystander", runVictim(t, by, "tcp", conns))
	expectTCP(t, "victim", runVictim(t, victim, "tcp", conns))
	if c := counts(t, e, key); c != 0 {
		t.Errorf("%d faults injected under tcp_v4_rcv, which runs in softirq only; want 0", c)
	}
}

// expectSoftirqFaulted is expectSoftirqSpared's control, with the interrupt-context filter off
// (disableIRQFilter): f, armed for one fault, fails an allocation in the victim's softirq, and
// the listener drops the packet, which is retransmitted: every connection is still made.
func expectSoftirqFaulted(t *testing.T, e *Engine, key string, victim, by *cgroup, f annotations.Fault, conns int) {
	t.Helper()
	f.Times = 1 // one dropped SYN or ACK is retransmitted after a second; more would cost minutes
	armOne(t, e, key, victim, f)
	expectTCP(t, "bystander", runVictim(t, by, "tcp", conns))
	if c := counts(t, e, key); c != 0 {
		t.Errorf("%d faults injected for the bystander", c)
	}
	vr := runVictim(t, victim, "tcp", conns)
	if vr.fail != 0 {
		t.Errorf("victim: want every connection to succeed (a dropped packet is retransmitted); got %s", vr)
	}
	if c := counts(t, e, key); c != 1 {
		t.Errorf("without the filter: %d faults injected under tcp_v4_rcv, want 1 (times: 1)", c)
	}
	if vr.extra == 0 {
		t.Errorf("without the filter: the listener dropped nothing; want the SYN or ACK whose allocation failed")
	}
	t.Logf("victim without the filter: %s; the listener dropped %d", vr, vr.extra)
}

// expectTCP: every connection of a kfault-victim tcp run was made, and the listener dropped
// nothing (a failed request sock or new socket allocation drops the SYN or the ACK).
func expectTCP(t *testing.T, who string, r victimResult) {
	t.Helper()
	expectAll(t, who, r, 0)
	if r.extra != 0 {
		t.Errorf("%s: the listener dropped %d packets, want 0", who, r.extra)
	}
}

// counts is the injected count of key's only fault.
func counts(t *testing.T, e *Engine, key string) uint64 {
	t.Helper()
	c, err := e.Counts(key)
	if err != nil || len(c) != 1 {
		t.Fatalf("Counts(%s) = %v, %v", key, c, err)
	}
	return c[0]
}

// disableIRQFilter turns the interrupt-context filter off for the hook programs e loads from now
// on (their preempt count addresses are 0, as on a kernel where they cannot be found), until the
// end of the test. No hook may be loaded: those keep the addresses they were loaded with.
func disableIRQFilter(t *testing.T, e *Engine) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.hooks) != 0 {
		t.Fatalf("disableIRQFilter: %d hook programs loaded", len(e.hooks))
	}
	off, pc := e.perCPUOffset, e.preemptCount
	e.perCPUOffset, e.preemptCount = 0, 0
	t.Cleanup(func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.perCPUOffset, e.preemptCount = off, pc
	})
}
