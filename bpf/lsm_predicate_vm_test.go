package bpf

import (
	"syscall"
	"testing"

	"github.com/kfault/kfault/annotations"
)

// TestVMLSMFilePredicate is the nearest thing to KernelChaos's bio fault that a stock kernel
// allows (docs/annotations.md): security_file_permission with errno EIO, narrowed by a predicate
// on the hooked function's own argument (the file's name), gives I/O errors on chosen files
// only. The victim reads /dev/zero: armed for "zero", every read fails with EIO; armed for
// another name, nothing fails (its own pipes and executable pass the same hook); a bystander
// cgroup is untouched.
func TestVMLSMFilePredicate(t *testing.T) {
	requireLSM(t)
	e := newTestEngine(t, MechanismFmodRet)
	fileNamed := func(name string) annotations.Fault {
		return annotations.Fault{Function: "security_file_permission", Errno: int(syscall.EIO), Probability: 100,
			CallChain: []annotations.Frame{{FuncName: "security_file_permission",
				Predicate: `STRCMP(file->f_path.dentry->d_name.name, "` + name + `")`}}}
	}
	cg := newCgroup(t, "", "lsm-pred")
	other := newCgroup(t, "", "lsm-pred-other")
	bystander := newCgroup(t, "", "lsm-pred-bystander")
	armOne(t, e, "zero", cg, fileNamed("zero"))
	armOne(t, e, "other", other, fileNamed("no-such-file"))
	expectAll(t, "reads of /dev/zero, predicate on zero", runVictim(t, cg, "read", 20), syscall.EIO)
	expectAll(t, "reads of /dev/zero, predicate on another name", runVictim(t, other, "read", 20), 0)
	expectAll(t, "bystander", runVictim(t, bystander, "read", 20), 0)
	if c, err := e.Counts("other"); err != nil || len(c) != 1 || c[0] != 0 {
		t.Errorf("Counts(other) = %v, %v; want [0]", c, err)
	}
}
