package bpf

import (
	"testing"
	"time"
)

// TestAttribute checks how a raw sample is matched to the rule that injected it, without BPF:
// the counter slot names the rule, and the cgroup and hook must agree, since a slot can have
// been reused by a newer rule by the time an old sample is read.
func TestAttribute(t *testing.T) {
	e := &Engine{}
	e.sampleOwners[17] = &sampleOwner{key: "k8s.io/abc", fault: 1, cgroup: 4242, functions: map[uint32]string{3: "should_failslab"}}
	e.sampleOwners[19] = &sampleOwner{key: "k8s.io/abc", cgroup: 4242, functions: map[uint32]string{5: "security_file_alloc", 6: "security_inode_alloc"}}
	comm := [16]int8{}
	for i, c := range "mount-loop" {
		comm[i] = int8(c)
	}
	good := kfaultEvent{TimeNs: 5e9, Cgroup: 4242, PidTgid: 77<<32 | 78, Seq: 1024, Retval: -12, Counter: 17, Hook: 3, Comm: comm}
	offset := time.Duration(1700000000e9)

	tests := map[string]struct {
		raw  kfaultEvent
		want *Injection
	}{
		"matching sample": {good, &Injection{Key: "k8s.io/abc", Fault: 1, Function: "should_failslab", Seq: 1024,
			PID: 78, TGID: 77, Comm: "mount-loop", Retval: -12, Time: time.Unix(1700000005, 0).UTC()}},
		"slot reused by another cgroup": {func() kfaultEvent { r := good; r.Cgroup = 1; return r }(), nil},
		"other hook":                    {func() kfaultEvent { r := good; r.Hook = 4; return r }(), nil},
		// A rule on several hooks (alloc) names the hook that injected.
		"another hook of the rule": {func() kfaultEvent { r := good; r.Counter = 19; r.Hook = 6; return r }(), &Injection{Key: "k8s.io/abc", Fault: 0,
			Function: "security_inode_alloc", Seq: 1024, PID: 78, TGID: 77, Comm: "mount-loop", Retval: -12, Time: time.Unix(1700000005, 0).UTC()}},
		"empty slot":        {func() kfaultEvent { r := good; r.Counter = 18; return r }(), nil},
		"slot out of range": {func() kfaultEvent { r := good; r.Counter = maxRules; return r }(), nil},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := e.attribute(tc.raw, offset)
			switch {
			case tc.want == nil && ok:
				t.Errorf("attributed to %+v, want dropped", got)
			case tc.want != nil && !ok:
				t.Errorf("dropped, want %+v", *tc.want)
			case tc.want != nil && got != *tc.want:
				t.Errorf("got %+v\nwant %+v", got, *tc.want)
			}
		})
	}
}
